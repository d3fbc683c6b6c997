"""Suites: TOML files parsed into pydantic models, validated against the registered plugins.

Loading happens in two phases. The structure (sections, keys, types and
ranges) is checked by the pydantic models below, which forbid unknown keys.
Then every name is looked up among the registered plugins and every step's
parameters are validated by its technique's ``Config``. All problems are
collected and raised together as one :class:`SuiteError` that names the file,
the key path, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from benchharness.errors import SuiteError, SuiteProblem

if TYPE_CHECKING:
    from benchharness.host import PluginHost


class Section(BaseModel):
    """Base of every suite section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParametrisedSection(BaseModel):
    """A section whose keys other than its own fields are parameters for a plugin, validated in the second phase."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def params(self) -> dict[str, Any]:
        """The keys that are not the section's own fields."""
        return dict(self.model_extra or {})


class DataSection(ParametrisedSection):
    """``[data]``: the data set and its parameters (e.g. ``dir``, ``download``)."""

    name: str = Field(description="Registered data set name, e.g. 'digits', 'cifar10' or 'synthetic'.")


class TechniqueEntry(ParametrisedSection):
    """One ``[[techniques]]`` entry: a pipeline of steps, each step's parameters under its name."""

    name: str | None = Field(
        None, pattern=r"^[^/\s]+$", description="Label of the pipeline in results (no '/' or spaces); defaults to the steps joined by '+'."
    )
    steps: list[str] = Field(min_length=1, description="Technique names applied in order, e.g. ['distill', 'prune'].")

    @property
    def label(self) -> str:
        """The pipeline's name in cell ids and reports."""
        return self.name or "+".join(self.steps)


class TrainBudget(Section):
    """``[train]``: the training budget shared by every technique that trains."""

    epochs: int = Field(10, ge=0, le=100_000, description="Passes over the training split.")
    batch_size: int = Field(128, ge=1, le=1_000_000, description="Samples per optimizer step.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="Optimizer.")
    lr: float = Field(0.05, gt=0, le=100, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Nesterov when > 0).")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 weight decay.")
    schedule: Literal["constant", "cosine", "onecycle"] = Field("onecycle", description="Learning-rate schedule, stepped every batch.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss.")
    channels_last: bool = Field(False, description="Keep image batches and convolution weights in channels-last layout (faster on recent GPUs).")


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
    threads: int | None = Field(None, ge=1, le=4096, description="torch intra-op threads; default: the physical cores among `cpus`.")
    cpus: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1, description="CPUs timing runs on (affinity); default: all this process may use.")
    eval_batch_size: int = Field(512, ge=1, description="Batch size used to compute accuracy.")

    def thread_count(self) -> int:
        """The torch threads a cell uses: ``threads``, or else the machine's physical cores (at most one per allowed CPU)."""
        import psutil

        if self.threads:
            return self.threads
        physical = psutil.cpu_count(logical=False) or 1
        return max(1, min(physical, len(self.cpus) if self.cpus else physical))

    @model_validator(mode="after")
    def _iterations_in_order(self) -> "MeasureSettings":
        if self.min_iterations > self.max_iterations:
            raise ValueError(f"min_iterations ({self.min_iterations}) must not exceed max_iterations ({self.max_iterations})")
        if self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) must not exceed max_rounds ({self.max_rounds})")
        return self


class RunSettings(Section):
    """``[run]``: how cells are executed."""

    cell_timeout_s: float = Field(1800.0, gt=0, description="A cell running longer is killed and recorded as 'timeout'.")
    cache: bool = Field(True, description="Reuse trained models from the artifact cache (and store new ones).")


class MatchRule(Section):
    """An ``[[include]]`` or ``[[exclude]]`` rule; each given key is a glob pattern."""

    model: str | None = None
    technique: str | None = None
    device: str | None = None

    def matches(self, model: str, technique: str, device: str) -> bool:
        """Whether every given pattern matches the cell."""
        from fnmatch import fnmatchcase

        pairs = ((self.model, model), (self.technique, technique), (self.device, device))
        return all(pattern is None or fnmatchcase(value, pattern) for pattern, value in pairs)


class SuiteSpec(Section):
    """A whole suite, as written in its TOML file."""

    name: str | None = Field(None, description="Name of the suite; defaults to the file's stem.")
    description: str = Field("", description="Free text shown in reports.")
    seed: int = Field(0, ge=0, description="Seed of repeat 0; repeat r uses seed + r.")
    repeats: int = Field(1, ge=1, le=1000, description="How many times each cell runs.")
    models: list[str] = Field(min_length=1, description="Model names, e.g. 'small_cnn' or 'torchvision:resnet50'.")
    devices: list[str] = Field(["cpu"], min_length=1, description="Device names, e.g. 'cpu', 'cuda'.")
    data: DataSection
    techniques: list[TechniqueEntry] = Field(default_factory=lambda: [TechniqueEntry(steps=["baseline"])], min_length=1)
    train: TrainBudget = Field(default_factory=TrainBudget)
    measure: MeasureSettings = Field(default_factory=MeasureSettings)
    run: RunSettings = Field(default_factory=RunSettings)
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


def problems_from_validation(error: ValidationError, model: type[BaseModel], prefix: tuple[Any, ...] = ()) -> list[SuiteProblem]:
    """Turn a pydantic ValidationError into suite problems with key paths and hints."""
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        path = _path(prefix + loc)
        if item["type"] == "extra_forbidden":
            known = _known_keys(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else (f"valid keys: {', '.join(known)}" if known else None)
            problems.append(SuiteProblem(path, "unknown key", hint))
        elif item["type"] == "missing":
            problems.append(SuiteProblem(path, "required key is missing", "add it"))
        else:
            message = item["msg"].replace("Value error, ", "")
            problems.append(SuiteProblem(path, f"expected: {message[0].lower() + message[1:]}; found {_found(item.get('input'))}"))
    return problems


_LINE = re.compile(r"line (\d+)")


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text, turning a syntax error into a SuiteError with its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = _LINE.search(str(error))
        line = int(match.group(1)) if match else None
        raise SuiteError(source, [SuiteProblem("", f"TOML syntax error: {error}", "fix the TOML syntax", line)]) from None


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


def load_suite(path: str | Path, host: "PluginHost", overrides: list[str] | None = None) -> Suite:
    """Read, parse and validate the suite at ``path``, with ``--set`` overrides applied."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise SuiteError(str(path), [SuiteProblem("", f"cannot read the file: {error.strerror or error}", "check the path")]) from None
    except UnicodeDecodeError as error:
        raise SuiteError(str(path), [SuiteProblem("", f"the file is not UTF-8 text: {error}", "save it as UTF-8")]) from None
    return load_suite_text(text, str(path), host, default_name=path.stem, overrides=overrides)


def load_suite_text(text: str, source: str, host: "PluginHost", default_name: str = "suite", overrides: list[str] | None = None) -> Suite:
    """Parse and validate suite ``text`` with ``overrides`` applied; ``source`` names it in errors."""
    overrides = list(overrides or [])
    raw = apply_overrides(parse_toml(text, source), overrides, source)
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as error:
        raise SuiteError(source, problems_from_validation(error, SuiteSpec)) from None
    problems: list[SuiteProblem] = []
    data_config = _check_data(spec, host, problems)
    step_configs = [_check_technique(index, entry, spec, host, problems) for index, entry in enumerate(spec.techniques)]
    _check_models(spec, host, problems)
    _check_devices(spec, host, problems)
    _check_unique(spec, problems)
    _check_cpus(spec, problems)
    suite = Suite(
        spec=spec,
        name=spec.name or default_name,
        source=source,
        text=text,
        overrides=overrides,
        sha256=hashlib.sha256((text + "".join(f"\n--set {item}" for item in overrides)).encode()).hexdigest(),
        step_configs=step_configs,
        data_config=data_config,
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
        problem = dataset.problem(dataset.Config.model_validate(config))
        if problem:
            problems.append(SuiteProblem("data", problem))
    return config


def _check_technique(index: int, entry: TechniqueEntry, spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> dict[str, dict[str, Any]]:
    where = f"techniques[{index}]"
    configs: dict[str, dict[str, Any]] = {}
    for key in entry.params:
        if key not in entry.steps:
            hint = difflib.get_close_matches(key, entry.steps + ["name", "steps"], n=1, cutoff=0.5)
            problems.append(SuiteProblem(f"{where}.{key}", "unknown key: not 'name', 'steps' or one of the steps", f"did you mean {hint[0]!r}?" if hint else f"the steps are {entry.steps}"))
    for position, step in enumerate(entry.steps):
        if step not in host.techniques:
            problems.append(SuiteProblem(f"{where}.steps[{position}]", f"unknown technique {step!r}", host.techniques.suggest(step)))
            continue
        technique = host.techniques[step]
        params = entry.params.get(step, {})
        if not isinstance(params, dict):
            problems.append(SuiteProblem(f"{where}.{step}", f"expected a table of parameters; found {_found(params)}"))
            continue
        before = len(problems)
        configs[step] = _validate_params(technique.Config, params, (where, step), problems)
        if len(problems) == before:
            problem = technique.check_suite(technique.Config.model_validate(configs[step]), spec)
            if problem:
                problems.append(SuiteProblem(f"{where}.{step}", problem))
    return configs


def split_model_name(name: str) -> tuple[str, str | None]:
    """Split ``family:variant`` into its parts (variant None when absent)."""
    family, _, variant = name.partition(":")
    return family, variant or None


def _check_models(spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> None:
    for index, name in enumerate(spec.models):
        where = f"models[{index}]"
        family_name, variant = split_model_name(name)
        if family_name not in host.models:
            problems.append(SuiteProblem(where, f"unknown model {name!r}", host.models.suggest(family_name)))
            continue
        variants = host.models[family_name].variants()
        if variants is None and variant is not None:
            problems.append(SuiteProblem(where, f"model {family_name!r} takes no variant; found {name!r}", f"write {family_name!r}"))
        elif variants is not None and variant is None:
            problems.append(SuiteProblem(where, f"model family {family_name!r} needs a variant", f"write e.g. '{family_name}:{variants[0]}'"))
        elif variants is not None and variant not in variants:
            close = difflib.get_close_matches(variant, variants, n=1, cutoff=0.5)
            hint = f"did you mean '{family_name}:{close[0]}'?" if close else f"see `benchharness list models`"
            problems.append(SuiteProblem(where, f"unknown {family_name} model {variant!r}", hint))


def _check_devices(spec: SuiteSpec, host: "PluginHost", problems: list[SuiteProblem]) -> None:
    devices = host.devices()
    for index, name in enumerate(spec.devices):
        if name not in devices:
            close = difflib.get_close_matches(name, list(devices), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"registered devices: {', '.join(devices)}"
            problems.append(SuiteProblem(f"devices[{index}]", f"unknown device {name!r}", hint))


def _check_cpus(spec: SuiteSpec, problems: list[SuiteProblem]) -> None:
    from benchharness.conditions import allowed_cpus, unavailable_cpus

    missing = unavailable_cpus(spec.measure.cpus)
    if missing:
        problems.append(SuiteProblem("measure.cpus", f"CPUs {missing} are not available to this process", f"choose among {allowed_cpus()}, or leave cpus out"))


def _check_unique(spec: SuiteSpec, problems: list[SuiteProblem]) -> None:
    for key, values in (("models", spec.models), ("devices", spec.devices), ("techniques", [t.label for t in spec.techniques])):
        seen: set[str] = set()
        for index, value in enumerate(values):
            if value in seen:
                hint = "give each pipeline a distinct 'name'" if key == "techniques" else "remove the duplicate"
                problems.append(SuiteProblem(f"{key}[{index}]", f"duplicate {key[:-1]} {value!r}: cell names would collide", hint))
            seen.add(value)
