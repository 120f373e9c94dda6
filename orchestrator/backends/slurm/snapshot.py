"""A copy of the code at submission, which every task of the sweep runs (requeued ones too).

Editing the working tree while a sweep is queued or running must not change its trials: at submit time the
``convit`` and ``orchestrator`` packages that the submitting process imports are copied into the sweep folder
(``<sweep>/slurm/code-<hash>/``), and the batch script puts that folder first on PYTHONPATH (with ``python -P``
so the job's working directory cannot shadow it). Copies are named by a hash of their content, so submitting
the same code again reuses the copy. Unlike submitit's RsyncSnapshot this needs neither git nor rsync and
includes files not yet committed.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
from pathlib import Path

PACKAGES = ("convit", "orchestrator")
#: Python imports ``sitecustomize`` from the path at start-up, before anything else runs: in a SLURM task it
#: catches the stop signals that arrive while the interpreter still imports the job (seconds, during which
#: submitit has no handler yet and a USR2 would kill the task unrequeued), so the job can act on them once its
#: handlers exist (orchestrator.backends.slurm.job.redeliver_early_signals).
EARLY_SIGNALS = """\
import os as _os
import signal as _signal

PENDING = []  # signals received before the job's own handlers were installed


def _remember(signum, frame):
    PENDING.append(signum)


if _os.environ.get("SLURM_JOB_ID"):
    for _name in {"SIG" + _os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), "SIGUSR2", "SIGTERM"}:
        if hasattr(_signal, _name):
            _signal.signal(getattr(_signal, _name), _remember)
"""
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".tmp", ".swp")


def package_dir(name: str) -> Path:
    """The folder of the package as this process imports it (the working tree or an installed copy)."""
    module = importlib.import_module(name)
    return Path(module.__file__).resolve().parent  # type: ignore[arg-type]


def _files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(_SKIP_SUFFIXES)]
    return out


def snapshot_code(dest_root: Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    """Copy ``packages`` into ``dest_root/code-<hash>`` (reused when identical); returns that folder."""
    sources = {name: package_dir(name) for name in packages}
    digest = hashlib.sha256()
    listing: list[tuple[Path, Path]] = []
    for name, src in sources.items():
        for path in _files(src):
            rel = Path(name) / path.relative_to(src)
            digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
            listing.append((path, rel))
    digest.update(b"sitecustomize.py\0" + EARLY_SIGNALS.encode())
    target = dest_root / f"code-{digest.hexdigest()[:12]}"
    if (target / ".complete").is_file():
        return target
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".code-", dir=dest_root))
    try:
        for path, rel in listing:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, tmp / rel)
        (tmp / "sitecustomize.py").write_text(EARLY_SIGNALS)
        (tmp / ".complete").write_text("\n".join(f"{n} {p}" for n, p in sources.items()) + "\n")
        if target.exists():  # an incomplete copy left by a killed submit
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
