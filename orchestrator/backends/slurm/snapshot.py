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
    target = dest_root / f"code-{digest.hexdigest()[:12]}"
    if (target / ".complete").is_file():
        return target
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".code-", dir=dest_root))
    try:
        for path, rel in listing:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, tmp / rel)
        (tmp / ".complete").write_text("\n".join(f"{n} {p}" for n, p in sources.items()) + "\n")
        if target.exists():  # an incomplete copy left by a killed submit
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
