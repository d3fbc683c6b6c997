"""Suites: TOML files parsed into pydantic models, validated against the registered plugins.

Loading happens in two phases. The structure (sections, keys, types and
ranges) is checked by the pydantic models below, which forbid unknown keys.
Then every name is looked up among the registered plugins and every step's
parameters are validated by its technique's ``Config``. All problems are
collected and raised together as one :class:`SuiteError` that names the file,
the key path, what was expected and what was found.

Inputs are bounded so that every bad one fails at once: the file must be a regular
file of at most 1 MiB, arrays and tables may nest at most 32 levels, names must be
safe as parts of file names, and the matrix may have at most 100,000 cells.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from benchharness.api import rebuild_config
from benchharness.errors import SuiteError, SuiteProblem

if TYPE_CHECKING:
    from benchharness.host import PluginHost

MAX_SUITE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_CELLS = 100_000
MAX_SEED = 2**32 - 1
HINTED = 100
NAME_MAX = 64
NAME_RULE = f"1 to {NAME_MAX} characters among letters, digits and . _ - +, not starting with . - or +"
_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._+-]{{0,{NAME_MAX - 1}}}")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._+-]")


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot name a suite or a pipeline (it becomes part of directory and file names), or None."""
    if _NAME.fullmatch(value):
        return None
    bad = _NAME_CHARS.search(value)
    if len(value) > NAME_MAX:
        detail = f" (this one has {len(value)})"
    elif bad:
        detail = f" ({bad.group()!r} is not allowed)"
    elif value:
        detail = f" ({value[0]!r} may not come first)"
    else:
        detail = ""
    return f"a name of {NAME_RULE}{detail}"


def _check_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def safe_name(text: str) -> str:
    """``text`` made into a valid name: runs of other characters become '_', leading '.', '-' and '+' go, at most 64 characters."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).lstrip(".-+")[:NAME_MAX]
    return name or "suite"


Name = Annotated[str, AfterValidator(_check_name)]


class Section(BaseModel):
    """Base of every suite section: unknown keys and values of the wrong type (``"2"`` for 2, ``1`` for true) are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ParametrisedSection(BaseModel):
    """A section whose keys other than its own fields are parameters for a plugin, validated in the second phase."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    @property
    def params(self) -> dict[str, Any]:
        """The keys that are not the section's own fields."""
        return dict(self.model_extra or {})


class DataSection(ParametrisedSection):
    """``[data]``: the data set and its parameters (e.g. ``dir``, ``download``)."""

    name: str = Field(description="Registered data set name, e.g. 'digits', 'cifar10' or 'synthetic'.")


class TechniqueEntry(ParametrisedSection):
    """One ``[[techniques]]`` entry: a pipeline of steps, each step's parameters under its name."""

    name: Name | None = Field(None, description=f"Label of the pipeline in results ({NAME_RULE}); defaults to the steps joined by '+'.")
    steps: list[str] = Field(min_length=1, description="Technique names applied in order, e.g. ['distill', 'prune'].")

    @property
    def label(self) -> str:
        """The pipeline's name in cell ids and reports."""
        return self.name or "+".join(self.steps)


SCHEDULE_GAMMA = {"step": 0.1, "exponential": 0.8, "plateau": 0.1}


class TrainBudget(Section):
    """``[train]``: the training budget shared by every technique that trains (a ``[[recipes]]`` entry overrides any of it)."""

    epochs: int = Field(10, ge=0, le=100_000, description="Passes over the training split.")
    batch_size: int = Field(128, ge=1, le=1_000_000, description="Samples per optimizer step.")
    optimizer: Literal["sgd", "adam", "adamw", "adagrad", "rmsprop"] = Field("sgd", description="Optimizer: sgd (with momentum), adam, adamw, adagrad or rmsprop.")
    lr: float = Field(0.05, gt=0, le=100, description="Learning rate (the peak of onecycle, the start of the others).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Nesterov when > 0).")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 weight decay.")
    schedule: Literal["constant", "step", "exponential", "linear", "cosine", "onecycle", "plateau"] = Field(
        "onecycle",
        description="Learning-rate schedule: onecycle, cosine and linear (to lr_end_factor) change it every batch; "
        "step (by lr_gamma every lr_step_epochs), exponential (by lr_gamma every epoch) and plateau (by lr_gamma when the "
        "training loss has not improved for plateau_patience epochs) every epoch.",
    )
    lr_gamma: float | None = Field(None, gt=0, lt=1, description="Factor of step, exponential and plateau decay; default 0.1 (step, plateau) or 0.8 (exponential).")
    lr_step_epochs: int = Field(3, ge=1, le=100_000, description="step: epochs between two decays.")
    lr_end_factor: float = Field(0.0, ge=0, le=1, description="linear: the final learning rate as a share of lr.")
    plateau_patience: int = Field(2, ge=0, le=100_000, description="plateau: epochs without improvement of the training loss before the rate is cut.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss.")
    augment: bool = Field(False, description="Random crop (4-pixel zero padding) and horizontal flip of every training image of at least 16x16 pixels; nothing for smaller inputs such as digits (the record says so).")
    learning_curve: bool = Field(True, description="Measure test accuracy after every epoch for the report's learning curves (one pass over the test split per epoch).")
    channels_last: bool = Field(False, description="Keep image batches and convolution weights in channels-last layout (faster on recent GPUs).")

    def schedule_gamma(self) -> float:
        """The decay factor of step, exponential and plateau schedules: ``lr_gamma`` or the schedule's default."""
        return self.lr_gamma if self.lr_gamma is not None else SCHEDULE_GAMMA.get(self.schedule, 0.1)


class RecipeEntry(ParametrisedSection):
    """One ``[[recipes]]`` entry: a named set of overrides of ``[train]`` (optimizer, schedule, label smoothing, augmentation, ...)."""

    name: Name = Field(description=f"Label of the recipe in cell ids and reports ({NAME_RULE}).")


class NamedModel(ParametrisedSection):
    """One ``[named_models.<name>]`` table: a registered model with options (e.g. ``dropout``), named for the suite's ``models``."""

    model: str = Field(description="The registered model it is built from, e.g. 'small_cnn' or 'torchvision:resnet50'.")


class MeasureSettings(Section):
    """``[measure]``: how inference latency is timed.

    Latency is measured in rounds. In each round one fresh process restores the saved
    models of every cell of a (model, device, repeat) group and times them in turns of
    about ``interleave_ms`` each; ``warmup`` ... ``max_iterations`` apply to one cell in one round.
    """

    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field([1, 32], min_length=1, description="Batch sizes timed for every cell.")
    warmup: int = Field(10, ge=0, le=100_000, description="Untimed iterations before timing starts, per round and batch size.")
    min_iterations: int = Field(30, ge=1, le=1_000_000, description="Timing goes on until at least this many samples per round...")
    min_seconds: float = Field(0.2, ge=0, le=3600, description="...and at least this many seconds of samples per round.")
    max_iterations: int = Field(10_000, ge=1, le=10_000_000, description="Upper bound of timed samples per round and batch size.")
    interleave_ms: float = Field(
        2.0, gt=0, le=60_000, description="Length of one turn: a cell runs this long (at least one iteration) before the next cell of its group."
    )
    min_rounds: int = Field(3, ge=2, le=1000, description="Interleaved rounds always measured (at least 2: a CI needs two paired rounds).")
    max_rounds: int = Field(10, ge=2, le=1000, description="Rounds stop here even when a speedup's CI is still wider than target_ci.")
    target_ci: float = Field(0.03, gt=0, le=1, description="Rounds stop once every speedup's 95% CI half-width is at most this share of the speedup.")
    max_seconds: float = Field(300.0, gt=0, le=86_400, description="Rounds of one group stop after this many seconds of measuring.")
    aa_control: bool = Field(True, description="Also time the reference a second time in every round (A/A control): the noise floor.")
    max_other_cpu: float = Field(
        0.2, ge=0, le=4096, description="A timing during which other processes used more than this many cores is disturbed and repeated."
    )
    disturbed_retries: int = Field(2, ge=0, le=100, description="How often a disturbed timing is repeated before it is kept and the cell flagged noisy.")
    max_round_sd: float = Field(
        0.10, gt=0, le=10, description="A cell whose per-round speedups have a geometric standard deviation above this share is flagged noisy."
    )
    threads: Annotated[int, Field(ge=1, le=4096)] | list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        None,
        description="torch intra-op threads; default: the physical cores among `cpus`. A list (e.g. [1, 2]) times latency at each "
        "count (the report shows the multi-thread speedup); cells are built and trained with the largest.",
    )
    cpus: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1, description="CPUs timing runs on (affinity); default: all this process may use.")
    eval_batch_size: int = Field(512, ge=1, description="Batch size used to compute accuracy.")

    def thread_count(self) -> int:
        """The torch threads a cell uses: ``threads``, or else the machine's physical cores, at most one per CPU the process may use.

        The CPUs it may use are ``cpus``, or the affinity it was given (a Slurm job's or a container's allocation).
        """
        import psutil

        if isinstance(self.threads, list):
            return max(self.threads)
        if self.threads:
            return self.threads
        physical = psutil.cpu_count(logical=False) or 1
        allowed = len(self.cpus) if self.cpus else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else physical
        return max(1, min(physical, allowed))

    def thread_counts(self) -> list[int]:
        """The thread counts latency is timed at: ``threads`` as a list (in its order), or just :meth:`thread_count`."""
        if isinstance(self.threads, list):
            return list(dict.fromkeys(self.threads))
        return [self.thread_count()]

    @model_validator(mode="after")
    def _iterations_in_order(self) -> "MeasureSettings":
        if self.min_iterations > self.max_iterations:
            raise ValueError(f"min_iterations ({self.min_iterations}) must not exceed max_iterations ({self.max_iterations})")
        if self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) must not exceed max_rounds ({self.max_rounds})")
        return self


class RunSettings(ParametrisedSection):
    """``[run]``: how cells are executed; ``[run.<executor>]`` holds the chosen executor's options."""

    cell_timeout_s: float = Field(1800.0, gt=0, description="A cell running longer is killed and recorded as 'timeout'.")
    cache: bool = Field(True, description="Reuse trained models from the artifact cache (and store new ones).")
    executor: str = Field("local", description="Where cells run: 'local' (this machine), 'ray' or 'slurm'; see `benchharness list executors`.")


class ReportSettings(Section):
    """``[report]``: how the report answers "which technique should I ship?"."""

    max_accuracy_drop: float = Field(
        1.0, ge=0, le=100, description="Accuracy budget in percentage points: the answers name the fastest technique whose top-1 accuracy is at most this much below the reference's."
    )


class MatchRule(Section):
    """An ``[[include]]`` or ``[[exclude]]`` rule; each given key is a glob pattern."""

    model: str | None = None
    technique: str | None = None
    device: str | None = None
    recipe: str | None = None

    def matches(self, model: str, technique: str, device: str, recipe: str | None = None) -> bool:
        """Whether every given pattern matches the cell (a recipe pattern never matches a suite without recipes)."""
        from fnmatch import fnmatchcase

        pairs = ((self.model, model), (self.technique, technique), (self.device, device), (self.recipe, recipe or ""))
        return all(pattern is None or fnmatchcase(value, pattern) for pattern, value in pairs)


class SuiteSpec(Section):
    """A whole suite, as written in its TOML file."""

    name: Name | None = Field(None, description=f"Name of the suite ({NAME_RULE}); defaults to the file's stem, made into a valid name.")
    description: str = Field("", description="Free text shown in reports.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of repeat 0; repeat r uses seed + r (at most 2**32 - 1).")
    repeats: int = Field(1, ge=1, le=1000, description="How many times each cell runs.")
    models: list[str] = Field(min_length=1, description="Model names, e.g. 'small_cnn' or 'torchvision:resnet50'.")
    devices: list[str] = Field(["cpu"], min_length=1, description="Device names, e.g. 'cpu', 'cuda'.")
    data: DataSection
    techniques: list[TechniqueEntry] = Field(default_factory=lambda: [TechniqueEntry(steps=["baseline"])], min_length=1)
    train: TrainBudget = Field(default_factory=TrainBudget)
    recipes: list[RecipeEntry] = Field(
        default_factory=list, description="Training recipes crossed with models, techniques and devices; the first is the reference recipe."
    )
    named_models: dict[str, NamedModel] = Field(default_factory=dict, description="Models with options, named for use in `models`.")
    measure: MeasureSettings = Field(default_factory=MeasureSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    include: list[MatchRule] = Field(default_factory=list, description="When given, only cells matching a rule run.")
    exclude: list[MatchRule] = Field(default_factory=list, description="Cells matching any rule are dropped.")


class Suite(BaseModel):
    """A validated suite: its spec, where it came from, and each step's validated parameters."""

    model_config = ConfigDict(frozen=True)

    spec: SuiteSpec
    name: str
    source: str
    text: str
    overrides: list[str] = Field(default_factory=list, description="--set overrides applied on top of the text.")
    sha256: str
    step_configs: list[dict[str, dict[str, Any]]] = Field(description="Per technique entry, per step, the validated config.")
    data_config: dict[str, Any]
    executor_config: dict[str, Any] = Field(default_factory=dict, description="The chosen executor's validated options.")
    recipe_budgets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per recipe, its whole validated training budget.")
    model_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per named model, its family's validated options.")

    def budget(self, recipe: str | None = None) -> TrainBudget:
        """The training budget of cells of ``recipe``: ``[train]`` with the recipe's overrides (``[train]`` itself for None)."""
        if recipe is None:
            return self.spec.train
        return rebuild_config(TrainBudget, self.recipe_budgets[recipe])

    def model_source(self, name: str) -> tuple[str, str | None, dict[str, Any]]:
        """The registered family, variant and options a model name of the suite stands for (a named model's, or the name's own)."""
        named = self.spec.named_models.get(name)
        family, variant = split_model_name(named.model if named else name)
        return family, variant, dict(self.model_options.get(name, {}))


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section found by following ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = args[0] if args and isinstance(args[0], type) else annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [name for name in current.model_fields if name != "params"]
    return []


def _found(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(problems: list[SuiteProblem], make: Callable[[], Any]) -> Any:
    """``make()``, unless so many problems came before that nobody reads this one's hint (suggestions take time)."""
    return make() if len(problems) < HINTED else None


def _unknown_key_hint(key: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else (f"valid keys: {', '.join(known)}" if known else None)


def _choice_hint(item: dict[str, Any]) -> str | None:
    """"did you mean 'x'?" for an invalid choice, naming the closest valid one."""
    choices = re.findall(r"'((?:[^'\\]|\\.)*)'", str(item.get("ctx", {}).get("expected", "")))
    close = difflib.get_close_matches(str(item.get("input")), choices, n=1, cutoff=0.3)
    return f"did you mean {close[0]!r}?" if close else None


STRICT_HINTS = {
    "bool_type": "write true or false, without quotes",
    "int_type": "write a whole number without quotes",
    "float_type": "write a number without quotes",
    "string_type": "put the value in quotes",
}


def _strict_hint(item: dict[str, Any]) -> str | None:
    """How to write a value of the right type, when one of the wrong type was given (configs are strict: "2" is not 2)."""
    return STRICT_HINTS.get(item["type"])


def problems_from_validation(error: ValidationError, model: type[BaseModel], prefix: tuple[Any, ...] = ()) -> list[SuiteProblem]:
    """Turn a pydantic ValidationError into suite problems with key paths and hints."""
    problems: list[SuiteProblem] = []
    for item in error.errors(include_url=False):
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        path = _path(prefix + loc)
        if item["type"] == "extra_forbidden":
            hint = _hint(problems, lambda: _unknown_key_hint(str(loc[-1]), _known_keys(model, loc[:-1])))
            problems.append(SuiteProblem(path, "unknown key", hint))
        elif item["type"] == "missing":
            problems.append(SuiteProblem(path, "required key is missing", "add it"))
        else:
            message = item["msg"].replace("Value error, ", "")
            hint = _choice_hint(item) if item["type"] == "literal_error" else _strict_hint(item)
            problems.append(SuiteProblem(path, f"expected: {message[0].lower() + message[1:]}; found {_found(item.get('input'))}", hint))
    return problems


_LINE = re.compile(r"line (\d+)")
_TOO_DEEP = f"arrays and tables may be nested at most {MAX_DEPTH} levels deep"


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text, turning a syntax error into a SuiteError with its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = _LINE.search(str(error))
        line = int(match.group(1)) if match else None
        raise SuiteError(source, [SuiteProblem("", f"TOML syntax error: {error}", "fix the TOML syntax", line)]) from None
    except RecursionError:
        raise SuiteError(source, [SuiteProblem("", "the TOML is nested too deeply to parse", _TOO_DEEP)]) from None


def check_depth(raw: dict[str, Any], source: str) -> None:
    """Raise a SuiteError naming the first array or table nested more than MAX_DEPTH levels deep (walked without recursion)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(raw, ())]
    while stack:
        value, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            raise SuiteError(source, [SuiteProblem(_path(loc), "nested too deeply", _TOO_DEEP)])
        if isinstance(value, dict):
            stack.extend((item, loc + (key,)) for key, item in value.items() if isinstance(item, (dict, list)))
        elif isinstance(value, list):
            stack.extend((item, loc + (index,)) for index, item in enumerate(value) if isinstance(item, (dict, list)))


_KEY_PART = re.compile(r"([A-Za-z0-9_-]+)((?:\[\d+\])*)$")


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Set ``dotted.key[index]=value`` overrides (values in TOML syntax, bare words as strings) on parsed TOML."""
    problems = []
    for override in overrides:
        path, equals, value_text = override.partition("=")
        if not equals or not path.strip():
            problems.append(SuiteProblem(override, "an override must look like key.path=value", "e.g. --set train.epochs=1"))
            continue
        try:
            value = tomllib.loads(f"value = {value_text}")["value"]
        except tomllib.TOMLDecodeError:
            value = value_text
        except RecursionError:
            problems.append(SuiteProblem(path, "the value is nested too deeply to parse", _TOO_DEEP))
            continue
        target: Any = raw
        steps: list[str | int] = []
        for part in path.strip().split("."):
            match = _KEY_PART.match(part)
            if not match:
                steps = []
                break
            steps.append(match.group(1))
            steps += [int(index) for index in re.findall(r"\[(\d+)\]", match.group(2))]
        if not steps:
            problems.append(SuiteProblem(path, "cannot parse this key path", "write keys separated by dots, list items as [index]"))
            continue
        try:
            for step, following in zip(steps, steps[1:]):
                if isinstance(step, str) and isinstance(target, dict):
                    target = target.setdefault(step, [] if isinstance(following, int) else {})
                else:
                    target = target[step]
            last = steps[-1]
            if isinstance(last, int) and not isinstance(target, list):
                raise TypeError
            target[last] = value
        except (IndexError, KeyError, TypeError):
            problems.append(SuiteProblem(path, "the suite has no such place to set", "check the key path and list indexes"))
    if problems:
        raise SuiteError(source, problems)
    return raw


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_a_file(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "something else")
    return f"not a regular file but {kind}"


def _too_large(size: int) -> SuiteProblem:
    return SuiteProblem("", f"the suite has {size:,} bytes, more than the 1 MiB ({MAX_SUITE_BYTES:,} bytes) a suite may have", "is this the right file?")


def read_suite_file(path: Path) -> str:
    """The text of the suite file at ``path``; pipes, devices and files over 1 MiB are refused without reading them.

    The path is checked with ``os.stat`` before it is opened (opening a FIFO would wait for a writer), and the
    opened file again, non-blocking, in case the path was replaced in between.
    """

    def refuse(problem: SuiteProblem) -> SuiteError:
        return SuiteError(str(path), [problem])

    try:
        kind = _not_a_file(os.stat(path).st_mode)
        if kind:
            raise refuse(SuiteProblem("", kind, "give the path of a suite's .toml file"))
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as file:
            status = os.fstat(file.fileno())
            kind = _not_a_file(status.st_mode)
            if kind:
                raise refuse(SuiteProblem("", kind, "give the path of a suite's .toml file"))
            if status.st_size > MAX_SUITE_BYTES:
                raise refuse(_too_large(status.st_size))
            data = file.read(MAX_SUITE_BYTES + 1)
    except OSError as error:
        raise refuse(SuiteProblem("", f"cannot read the file: {error.strerror or error}", "check the path")) from None
    except ValueError as error:
        raise refuse(SuiteProblem("", f"cannot read the file: {error}", "check the path")) from None
    if len(data) > MAX_SUITE_BYTES:
        raise refuse(_too_large(len(data)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise refuse(SuiteProblem("", f"the file is not UTF-8 text: {error}", "save it as UTF-8")) from None


def load_suite(path: str | Path, host: "PluginHost", overrides: list[str] | None = None) -> Suite:
    """Read, parse and validate the suite at ``path``, with ``--set`` overrides applied."""
    path = Path(path)
    return load_suite_text(read_suite_file(path), str(path), host, default_name=path.stem, overrides=overrides)


def load_suite_text(text: str, source: str, host: "PluginHost", default_name: str = "suite", overrides: list[str] | None = None) -> Suite:
    """Parse and validate suite ``text`` with ``overrides`` applied; ``source`` names it in errors.

    Without a ``name`` in the text the suite is called ``default_name``, made into a valid name by :func:`safe_name`.
    """
    overrides = list(overrides or [])
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SUITE_BYTES:
        raise SuiteError(source, [_too_large(size)])
    raw = apply_overrides(parse_toml(text, source), overrides, source)
    check_depth(raw, source)
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as error:
        raise SuiteError(source, problems_from_validation(error, SuiteSpec)) from None
    problems: list[SuiteProblem] = []
    _check_seed(spec, problems)
    data_config = _check_data(spec, host, problems)
    step_configs = [_check_technique(index, entry, spec, host, problems) for index, entry in enumerate(spec.techniques)]
    executor_config = _check_executor(spec, host, problems)
    recipe_budgets = _check_recipes(spec, problems)
    model_options = _check_named_models(spec, host, problems)
    _check_models(spec, host, problems)
    _check_devices(spec, host, problems)
    _check_unique(spec, problems)
    _check_cpus(spec, problems)
    _check_matrix_size(spec, problems)
    suite = Suite(
        spec=spec,
        name=spec.name if spec.name is not None else safe_name(default_name),
        source=source,
        text=text,
        overrides=overrides,
        sha256=hashlib.sha256((text + "".join(f"\n--set {item}" for item in overrides)).encode()).hexdigest(),
        step_configs=step_configs,
        data_config=data_config,
        executor_config=executor_config,
        recipe_budgets=recipe_budgets,
        model_options=model_options,
    )
    if not problems:
        from benchharness.matrix import expand

        if not expand(suite):
            problems.append(SuiteProblem("include/exclude", "the matrix is empty after include and exclude rules", "loosen the rules"))
    if problems:
        raise SuiteError(source, problems)
    return suite


def _validate_params(config_type: type[BaseModel], params: dict[str, Any], prefix: tuple[Any, ...], problems: list[SuiteProblem]) -> dict[str, Any]:
    try:
        return config_type.model_validate(params).model_dump(mode="json")
    except ValidationError as error:
        problems.extend(problems_from_validation(error, config_type, prefix))
        return {}


def _check_data(spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> dict[str, Any]:
    if spec.data.name not in host.datasets:
        problems.append(SuiteProblem("data.name", f"unknown data set {spec.data.name!r}", host.datasets.suggest(spec.data.name)))
        return {}
    dataset = host.datasets[spec.data.name]
    config = _validate_params(dataset.Config, spec.data.params, ("data",), problems)
    if config:
        problem = dataset.problem(rebuild_config(dataset.Config, config))
        if problem:
            problems.append(SuiteProblem("data", problem))
    return config


def _run_key_hint(key: str, host: "PluginHost") -> str:
    """A hint for an unknown key under ``[run]``: the closest setting or executor table."""
    choices = [name for name in RunSettings.model_fields] + host.executors.names()
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"[run] takes {', '.join(RunSettings.model_fields)} and a table per executor ({', '.join(host.executors.names())})"


def _check_executor(spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> dict[str, Any]:
    """The chosen executor's options from ``[run.<executor>]``; a table for another executor is an error."""
    name = spec.run.executor
    for key, value in spec.run.params.items():
        if key != name:
            known = key in host.executors
            hint = f"set run.executor = {key!r} to use it" if known else _hint(problems, lambda: _run_key_hint(key, host))
            problems.append(SuiteProblem(f"run.{key}", "options for an executor that is not chosen" if known else "unknown key", hint))
    if name not in host.executors:
        problems.append(SuiteProblem("run.executor", f"unknown executor {name!r}", host.executors.suggest(name)))
        return {}
    options = spec.run.params.get(name, {})
    if not isinstance(options, dict):
        problems.append(SuiteProblem(f"run.{name}", f"expected a table of {name} options; found {_found(options)}"))
        return {}
    executor = host.executors[name]
    config = _validate_params(executor.Config, options, ("run", name), problems)
    if not problems:
        reason = executor.unavailable_reason(rebuild_config(executor.Config, config))
        if reason:
            problems.append(SuiteProblem("run.executor", f"the {name} executor cannot be used here: {reason}"))
    return config


def _check_technique(index: int, entry: TechniqueEntry, spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> dict[str, dict[str, Any]]:
    where = f"techniques[{index}]"
    configs: dict[str, dict[str, Any]] = {}
    for key in entry.params:
        if key not in entry.steps:
            hint = _hint(problems, lambda: _step_key_hint(key, entry.steps))
            problems.append(SuiteProblem(f"{where}.{key}", "unknown key: not 'name', 'steps' or one of the steps", hint))
    if entry.name is None and all(step in host.techniques for step in entry.steps):
        problem = name_problem(entry.label)
        if problem:
            problems.append(SuiteProblem(f"{where}.steps", f"the pipeline's label {_found(entry.label)}, its steps joined by '+', is not a valid name: {problem}", "give the pipeline a 'name'"))
    for position, step in enumerate(entry.steps):
        if step not in host.techniques:
            hint = _hint(problems, lambda: host.techniques.suggest(step))
            problems.append(SuiteProblem(f"{where}.steps[{position}]", f"unknown technique {step!r}", hint))
            continue
        technique = host.techniques[step]
        params = entry.params.get(step, {})
        if not isinstance(params, dict):
            problems.append(SuiteProblem(f"{where}.{step}", f"expected a table of parameters; found {_found(params)}"))
            continue
        before = len(problems)
        configs[step] = _validate_params(technique.Config, params, (where, step), problems)
        if len(problems) == before:
            problem = _suite_check(technique, rebuild_config(technique.Config, configs[step]), spec, host)
            if problem:
                problems.append(SuiteProblem(f"{where}.{step}", problem))
    return configs


def _suite_check(technique: Any, config: BaseModel, spec: SuiteSpec, host: "PluginHost") -> str | None:
    """``technique.check_suite``'s problem; one that raises is a problem naming the technique's plugin and the error."""
    from benchharness.host import describe_error

    try:
        return technique.check_suite(config, spec)
    except Exception as error:
        plugin = host.techniques.entries[technique.NAME].plugin
        return f"technique {technique.NAME!r} (plugin {plugin!r}) raised in check_suite: {describe_error(error)}; this is a bug in the plugin"


def _step_key_hint(key: str, steps: list[str]) -> str:
    close = difflib.get_close_matches(key, steps + ["name", "steps"], n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"the steps are {steps}"


def split_model_name(name: str) -> tuple[str, str | None]:
    """Split ``family:variant`` into its parts (variant None when absent)."""
    family, _, variant = name.partition(":")
    return family, variant or None


def _family_problem(name: str, host: "PluginHost", problems: list[SuiteProblem]) -> SuiteProblem | None:
    """Why ``name`` (``family`` or ``family:variant``) is not a registered model, or None."""
    family_name, variant = split_model_name(name)
    if family_name not in host.models:
        return SuiteProblem("", f"unknown model {name!r}", _hint(problems, lambda: host.models.suggest(family_name)))
    variants = host.models[family_name].variants()
    if variants is None and variant is not None:
        return SuiteProblem("", f"model {family_name!r} takes no variant; found {name!r}", f"write {family_name!r}")
    if variants is not None and variant is None:
        return SuiteProblem("", f"model family {family_name!r} needs a variant", f"write e.g. '{family_name}:{variants[0]}'")
    if variants is not None and variant not in variants:
        close = _hint(problems, lambda: difflib.get_close_matches(variant, variants, n=1, cutoff=0.5))
        hint = f"did you mean '{family_name}:{close[0]}'?" if close else "see `benchharness list models`"
        return SuiteProblem("", f"unknown {family_name} model {variant!r}", hint)
    return None


def _check_models(spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> None:
    for index, name in enumerate(spec.models):
        if name in spec.named_models:
            continue
        problem = _family_problem(name, host, problems)
        if problem:
            hint = problem.hint
            if problem.message.startswith("unknown model") and spec.named_models:
                hint = "; ".join(part for part in (hint, f"named models: {', '.join(spec.named_models)}") if part)
            problems.append(SuiteProblem(f"models[{index}]", problem.message, hint))


def _check_named_models(spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> dict[str, dict[str, Any]]:
    """Each named model's options, validated by its family's ``Config``."""
    options: dict[str, dict[str, Any]] = {}
    for name, entry in spec.named_models.items():
        where = f"named_models.{name}"
        name_issue = name_problem(name)
        if name_issue:
            problems.append(SuiteProblem(where, f"the name {name!r} is not valid: {name_issue}", "rename the table"))
            continue
        if split_model_name(name)[0] in host.models:
            problems.append(SuiteProblem(where, f"{name!r} is the name of a registered model", f"give the named model another name, e.g. '{name}-options'"))
            continue
        problem = _family_problem(entry.model, host, problems)
        if problem:
            problems.append(SuiteProblem(f"{where}.model", problem.message, problem.hint))
            continue
        family = host.models[split_model_name(entry.model)[0]]
        options[name] = _validate_params(family.Config, entry.params, ("named_models", name), problems)
    return options


def _check_recipes(spec: SuiteSpec, problems: list[SuiteProblem]) -> dict[str, dict[str, Any]]:
    """Each recipe's whole training budget: ``[train]`` with the recipe's keys validated like ``[train]``'s."""
    budgets: dict[str, dict[str, Any]] = {}
    base = spec.train.model_dump()
    for index, entry in enumerate(spec.recipes):
        try:
            budgets[entry.name] = TrainBudget.model_validate({**base, **entry.params}).model_dump(mode="json")
        except ValidationError as error:
            problems.extend(problems_from_validation(error, TrainBudget, ("recipes", index)))
    return budgets


def _check_devices(spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> None:
    devices = host.devices()
    for index, name in enumerate(spec.devices):
        if name not in devices:
            close = _hint(problems, lambda: difflib.get_close_matches(name, list(devices), n=1, cutoff=0.5))
            hint = f"did you mean {close[0]!r}?" if close else f"registered devices: {', '.join(devices)}"
            problems.append(SuiteProblem(f"devices[{index}]", f"unknown device {name!r}", "; ".join([hint, *(sentence for _, sentence in host.unloaded_notes())])))


def _check_seed(spec: SuiteSpec, problems: list[SuiteProblem]) -> None:
    last = spec.seed + spec.repeats - 1
    if last > MAX_SEED:
        problems.append(SuiteProblem("seed", f"the last repeat would use seed {last} (seed + repeats - 1), above the largest seed {MAX_SEED}", "lower seed or repeats"))


_MATRIX_NOUNS = (("model", "models"), ("pipeline", "pipelines"), ("device", "devices"), ("repeat", "repeats"), ("recipe", "recipes"))


def _check_matrix_size(spec: SuiteSpec, problems: list[SuiteProblem]) -> None:
    counts = (len(spec.models), len(spec.techniques), len(spec.devices), spec.repeats, max(1, len(spec.recipes)))
    cells = counts[0] * counts[1] * counts[2] * counts[3] * counts[4]
    if cells > MAX_CELLS:
        named = list(zip(counts, _MATRIX_NOUNS))[: 5 if spec.recipes else 4]
        parts = " x ".join(f"{count} {noun if count == 1 else plural}" for count, (noun, plural) in named)
        problems.append(SuiteProblem("", f"the matrix would have {cells:,} cells ({parts}), more than {MAX_CELLS:,}", "split the suite or lower repeats"))


def _check_cpus(spec: SuiteSpec, problems: list[SuiteProblem]) -> None:
    from benchharness.conditions import allowed_cpus, unavailable_cpus

    missing = unavailable_cpus(spec.measure.cpus)
    if missing:
        problems.append(SuiteProblem("measure.cpus", f"CPUs {missing} are not available to this process", f"choose among {allowed_cpus()}, or leave cpus out"))


def _check_unique(spec: SuiteSpec, problems: list[SuiteProblem]) -> None:
    labelled = (("models", spec.models), ("devices", spec.devices), ("techniques", [t.label for t in spec.techniques]), ("recipes", [r.name for r in spec.recipes]))
    for key, values in labelled:
        seen: set[str] = set()
        for index, value in enumerate(values):
            if value in seen:
                hint = {"techniques": "give each pipeline a distinct 'name'", "recipes": "give each recipe a distinct 'name'"}.get(key, "remove the duplicate")
                problems.append(SuiteProblem(f"{key}[{index}]", f"duplicate {key[:-1]} {value!r}: cell names would collide", hint))
            seen.add(value)
