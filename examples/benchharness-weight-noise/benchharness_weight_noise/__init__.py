"""weight_noise: perturb every weight by Gaussian noise scaled to the weight tensor's own standard deviation."""

from __future__ import annotations

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl


class WeightNoiseConfig(StrictConfig):
    """Parameters of weight_noise."""

    relative_std: float = Field(0.05, ge=0.0, le=10.0, description="Noise standard deviation relative to each tensor's own.")
    seed: int = Field(0, ge=0, description="Seed of the noise.")


class WeightNoise(Technique):
    """Adds Gaussian noise to every floating-point parameter; needs a trained model, so the harness trains first."""

    NAME = "weight_noise"
    DESCRIPTION = "Gaussian noise on the weights, relative to each tensor's spread (robustness check)"
    Config = WeightNoiseConfig

    def apply(self, model, config, context):
        import torch

        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.is_floating_point() and parameter.numel() > 1:
                    noise = torch.randn(parameter.shape, generator=generator).to(parameter.device)
                    parameter.add_(noise * parameter.std() * config.relative_std)
        context.notes["weight_noise_relative_std"] = config.relative_std
        return model


@hookimpl
def register_techniques(register):
    """Register weight_noise."""
    register(WeightNoise())
