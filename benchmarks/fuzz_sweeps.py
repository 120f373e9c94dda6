"""Feed the bad-sweep corpus (tests/fuzz/corpus.py) to `convit-sweep submit --dry-run`, each in its own process
under a 6 GiB address-space limit and a 60 s timeout, and print the tally: refused cleanly (exit 2, no traceback,
nothing written), traceback, accepted, killed (time or memory).

    .venv/bin/python benchmarks/fuzz_sweeps.py
"""
from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.fuzz.corpus import CASES  # noqa: E402


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def run(name: str, data: bytes, overrides: list[str], tmp: Path) -> tuple[str, float, str]:
    path = tmp / f"{name}.yaml"
    path.write_bytes(data)
    work = tmp / f"runs-{name}"
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(path), "--dry-run",
                              "--workdir", str(work), *overrides], cwd=REPO, capture_output=True, text=True,
                             timeout=60, preexec_fn=_limit, errors="replace")
    except subprocess.TimeoutExpired:
        return "killed (60 s)", time.perf_counter() - start, ""
    took = time.perf_counter() - start
    text = out.stdout + out.stderr
    if "Traceback" in text:
        kind = "traceback"
    elif out.returncode == 2:
        kind = "refused cleanly" if not work.exists() else "refused, but wrote"
    elif out.returncode == 0:
        kind = "accepted"
    elif out.returncode < 0 or "MemoryError" in text:
        kind = "killed (memory)"
    else:
        kind = f"exit {out.returncode}"
    return kind, took, (out.stderr.strip().splitlines() or [""])[-1][:150]


def main() -> None:
    tally: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (data, overrides) in CASES.items():
            kind, took, last = run(name, data, overrides, Path(tmp))
            tally[kind] += 1
            print(f"{name:26s} {kind:18s} {took:5.1f} s  {last}")
    print(f"\n{sum(tally.values())} bad inputs: " + ", ".join(f"{n} {k}" for k, n in tally.most_common()))


if __name__ == "__main__":
    main()
