"""User-facing errors of the orchestrator.

Every problem a user can fix (a typo in a sweep file, a backend that is not installed, an unknown sweep name)
is raised as an :class:`OrchestratorError`, which the CLI turns into a readable message and exit code 2.
Sweep files collect *all* their problems first and raise them together as one :class:`SpecError`, so a
user fixes a file in one pass instead of one error per run.
"""
from __future__ import annotations

from dataclasses import dataclass


class OrchestratorError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback and exits with code 2."""


class BackendUnavailable(OrchestratorError):
    """The requested backend cannot be imported here (missing package or module)."""


class UnknownSweep(OrchestratorError):
    """No sweep of that name exists in the working folder."""


@dataclass(frozen=True, order=True)
class SpecIssue:
    """One problem in a sweep file, located precisely enough to jump to it in an editor."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SpecError(OrchestratorError):
    """All problems found in a sweep file, reported together."""

    def __init__(self, issues: list[SpecIssue]):
        unique = list(dict.fromkeys(issues))
        self.issues = sorted(unique, key=lambda i: (i.file, i.line or 0, i.key, i.message))
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in the sweep:"
        return "\n".join([head, *(f"  {issue}" for issue in self.issues)])
