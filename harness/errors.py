"""The harness's own error types."""

from __future__ import annotations

from dataclasses import dataclass, field


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


@dataclass
class SuiteProblem:
    """One thing wrong with a suite: where it is, what was expected, what was found."""

    path: str
    message: str
    hint: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(top level)"
        if self.line is not None:
            where = f"line {self.line}: {where}"
        text = f"{where}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


@dataclass
class SuiteError(HarnessError):
    """A suite that cannot be run; lists every problem found, each with its key path."""

    file: str
    problems: list[SuiteProblem] = field(default_factory=list)

    SHOWN = 20

    def __str__(self) -> str:
        """The file and the problem count, then the first :attr:`SHOWN` problems and how many more there are."""
        count = len(self.problems)
        lines = [f"{self.file}: invalid suite ({count:,} problem{'s' if count != 1 else ''})"]
        lines += [f"  {self.file}: {problem}" for problem in self.problems[: self.SHOWN]]
        rest = count - self.SHOWN
        if rest > 0:
            lines.append(f"  ... and {rest:,} more problem{'s' if rest != 1 else ''}")
        return "\n".join(lines)


class PluginError(HarnessError):
    """A plugin that cannot be loaded or that registers something invalid."""


class Diverged(HarnessError):
    """Training produced a NaN or infinite loss."""


class Unsupported(HarnessError):
    """A cell asks for something its device or model cannot do; recorded as skipped."""
