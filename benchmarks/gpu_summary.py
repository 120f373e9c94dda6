"""The JSON summary of benchmarks/gpu_check.sh: the figures of its steps side by side, with the targets.

    python benchmarks/gpu_summary.py benchmarks/results/gpu_check [--seconds N]

Reads what the steps wrote (models.json from bench_models.py, engine.json and engine_compile.json from
bench_engine.py, steps.txt with each step's exit code and seconds, gpu.txt from nvidia-smi) and prints one JSON
object; a step that failed or timed out shows as such (its log is next to it), the others are still summarised.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

TARGETS = {"convit_small ours/timm throughput": (">=", 2.0), "convit_small ours/timm peak memory": ("<=", 0.6),
           "convit_small / deit_small throughput": (">=", 0.8)}
LOADER_BOUND = 0.9  # end to end below 90 % of the step-only rate: the step waits for data


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _verdict(name: str, value: float | None) -> dict[str, Any]:
    op, target = TARGETS[name]
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"value": value, "target": f"{op} {target}", "met": met}


def models_part(out: Path) -> dict[str, Any]:
    data = _load(out / "models.json")
    if not data:
        return {"error": "no models.json (see models.log)"}
    cuda = [r for r in data.get("ratios", []) if r.get("device") == "cuda"]
    if not cuda:
        return {"error": "no CUDA rows in models.json"}
    row = cuda[0]
    speed, vs_deit = row.get("speed_ours_vs_timm", {}), row.get("speed_convit_vs_deit", {})
    return {
        "case": row.get("case"),
        "throughput_img_per_s": {r["impl"]: round(r["img_per_s"], 1) for r in data.get("results", [])
                                 if r.get("device") == "cuda"},
        "peak_memory_mib": {r["impl"]: round(r["peak_mem_mib"], 1) for r in data.get("results", [])
                            if r.get("device") == "cuda" and r.get("peak_mem_mib") is not None},
        "ours_vs_timm_throughput": {**_verdict("convit_small ours/timm throughput", speed.get("median")),
                                    "iqr": [speed.get("q1"), speed.get("q3")], "rounds": speed.get("rounds")},
        "ours_vs_timm_peak_memory": _verdict("convit_small ours/timm peak memory", row.get("mem_ours_vs_timm")),
        "convit_vs_deit_throughput": {**_verdict("convit_small / deit_small throughput", vs_deit.get("median")),
                                      "iqr": [vs_deit.get("q1"), vs_deit.get("q3")]},
        "our_deit_vs_timm_deit": row.get("speed_deit_vs_timm_deit"),
    }


def engine_part(out: Path) -> dict[str, Any]:
    part: dict[str, Any] = {}
    for key, name in (("compile_off", "engine.json"), ("compile_on", "engine_compile.json")):
        data = _load(out / name)
        rows = [r for r in (data or {}).get("results", []) if str(r.get("device", "")).startswith("cuda")]
        if not rows:
            part[key] = {"error": f"no CUDA row in {name} (see {name.replace('.json', '.log')})"}
            continue
        r = rows[0]
        step, loader, e2e = r["step_img_per_s"], r["loader_img_per_s"], r["end_to_end_img_per_s"]
        part[key] = {"loader_img_per_s": round(loader), "step_img_per_s": round(step),
                     "end_to_end_img_per_s": round(e2e), "end_to_end_vs_step": round(e2e / step, 3),
                     "loader_bound": e2e < LOADER_BOUND * step, "amp": r.get("amp")}
    on, off = part.get("compile_on", {}), part.get("compile_off", {})
    if "step_img_per_s" in on and "step_img_per_s" in off:
        part["compile_speedup_step"] = round(on["step_img_per_s"] / off["step_img_per_s"], 3)
        part["compile_speedup_end_to_end"] = round(on["end_to_end_img_per_s"] / off["end_to_end_img_per_s"], 3)
    return part


def summary(out: Path, seconds: int | None) -> dict[str, Any]:
    steps = {}
    for line in (out / "steps.txt").read_text().splitlines() if (out / "steps.txt").exists() else []:
        name, rc, took = line.split()
        steps[name] = {"exit": int(rc), "seconds": int(took), "timed_out": int(rc) in (124, 137)}
    gpu = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else None
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "gpu": gpu, "seconds": seconds,
            "steps": steps, "models": models_part(out), "engine": engine_part(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder gpu_check.sh wrote")
    parser.add_argument("--seconds", type=int, default=None, help="the whole check's wall time")
    args = parser.parse_args(argv)
    print(json.dumps(summary(args.out, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
