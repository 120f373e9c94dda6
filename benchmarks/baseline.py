"""The code of another commit, for benchmarks that compare it with the working tree in one run.

    with code_at("a2f0a53") as tree:   # a temporary copy of that commit's files (git archive), removed after
        subprocess.run([sys.executable, "-m", "orchestrator.cli", ...], cwd=tree, env={"PYTHONPATH": str(tree)})

Both sides run with the same interpreter and packages, so a difference is the code's. Commands run from the
copy import the copy (it comes first on PYTHONPATH and is the working directory).
"""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def code_at(rev: str) -> Iterator[Path]:
    """A temporary copy of commit ``rev``'s tracked files; raises SystemExit with git's message for a bad rev."""
    with tempfile.TemporaryDirectory(prefix=f"baseline-{rev[:12]}-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True)
        if archive.returncode != 0:
            raise SystemExit(f"--baseline {rev}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp)
