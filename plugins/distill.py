"""Knowledge distillation (Hinton et al., 2015): a student trained on a teacher's softened outputs."""

from __future__ import annotations

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl


class DistillConfig(StrictConfig):
    """Parameters of the distill technique."""

    teacher: str = Field(description="A model of the suite, trained with the suite's budget (or taken from the cache).")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the distillation term; 1 - alpha weighs the cross-entropy with the labels.")
    temperature: float = Field(4.0, gt=0.0, le=100.0, description="Softmax temperature T of teacher and student.")
    epochs: int | None = Field(None, ge=1, le=100_000, description="Student epochs; default: the suite's budget.")


def distillation_loss(student_logits, teacher_logits, targets, alpha: float, temperature: float, label_smoothing: float = 0.0):
    """alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * cross-entropy(s, y)."""
    import torch.nn.functional as F

    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


class Distill(Technique):
    """Trains the cell's model from scratch as the student of a trained teacher."""

    NAME = "distill"
    DESCRIPTION = "knowledge distillation from a teacher model of the suite (Hinton et al.)"
    TRAINS = True
    Config = DistillConfig

    def check_suite(self, config, suite):
        if config.teacher not in suite.models:
            return f"teacher {config.teacher!r} is not a model of the suite; choose one of {suite.models}"
        return None

    def cacheable(self, config):
        return True

    def apply(self, model, config, context):
        import torch

        teacher = context.trained_model(config.teacher)
        teacher.requires_grad_(False)
        label_smoothing = context.trainer.budget.label_smoothing

        def loss(logits, inputs, targets):
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            return distillation_loss(logits, teacher_logits, targets, config.alpha, config.temperature, label_smoothing)

        context.trainer.fit(model, context.data, loss_fn=loss, epochs=config.epochs)
        self._record(model, config, context, teacher)
        return model

    def _record(self, student, config, context, teacher):
        """Note the teacher's accuracy, the same student trained without a teacher, the gain over it and the retention (student over teacher accuracy)."""
        alone = context.evaluate(context.trained_model(context.cell.model))
        with_teacher = context.evaluate(student)
        teacher_accuracy = context.evaluate(teacher)
        context.notes.update(
            teacher=config.teacher,
            teacher_accuracy_top1=teacher_accuracy,
            student_without_teacher_accuracy_top1=alone,
            distill_gain_top1=with_teacher - alone,
            distill_retention=with_teacher / teacher_accuracy if teacher_accuracy > 0 else None,
        )


@hookimpl
def register_techniques(register):
    """Register the distill technique."""
    register(Distill())
