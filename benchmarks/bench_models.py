"""Training throughput and peak memory: our ConViT vs timm's (same weights), our DeiT vs timm's DeiT, and
ConViT vs DeiT.

One training step = forward + cross-entropy + backward + AdamW step. Made to hold on a shared, noisy machine:
torch's threads pinned (``--threads``, also the process's CPU affinity to that many cores), ``--warmup`` untimed
steps per model, then single steps timed in rotation (ours, timm, deit, timm_deit, then the next round starting
one later...): throughput is the median step, and every ratio is the median of per-round ratios (the steps of one
round run back to back under the same load) with its interquartile range; the load average before and after is
printed. Peak memory: CUDA ``max_memory_allocated`` (bf16 autocast); on CPU how far the RSS rises above its
pre-training level during two training steps, measured for each model in a fresh subprocess.

    python benchmarks/bench_models.py --threads 2 --batch-size 32 --steps 12 --warmup 3 --out bench.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = {  # case -> (our name, our deit, create kwargs); timm's deit is TIMM_DEIT[our deit]
    "tiny-32px-p4": ("convit_tiny", "deit_tiny", dict(img_size=32, patch_size=4, num_classes=10)),
    "tiny-224px-p16": ("convit_tiny", "deit_tiny", dict(img_size=224, patch_size=16, num_classes=1000)),
    "small-224px-p16": ("convit_small", "deit_small", dict(img_size=224, patch_size=16, num_classes=1000)),
}
IMPLS = ("ours", "timm", "deit", "timm_deit")
TIMM_DEIT = {"deit_tiny": "deit_tiny_patch16_224", "deit_small": "deit_small_patch16_224"}


@dataclass
class Result:
    device: str
    case: str
    impl: str
    model: str
    batch_size: int
    img_per_s: float = 0.0
    step_img_per_s: list[float] = field(default_factory=list)
    peak_mem_mib: float | None = None


def build(impl: str, case: str, device: str) -> torch.nn.Module:
    """Ours and timm's ConViT get identical weights (timm's random init, loaded into ours)."""
    import timm

    import convit

    convit_name, deit_name, kwargs = CASES[case]
    torch.manual_seed(0)
    if impl == "deit":
        return convit.create_model(deit_name, **kwargs).to(device)
    if impl == "timm_deit":  # timm's own DeiT (qkv bias on, as published); ours has the ConViT code's (off)
        timm_kwargs = {k: v for k, v in kwargs.items() if k != "patch_size"}
        return timm.create_model(TIMM_DEIT[deit_name], patch_size=kwargs["patch_size"], **timm_kwargs).to(device)
    reference = timm.create_model(convit_name, **kwargs)
    if impl == "timm":
        return reference.to(device)
    ours = convit.create_model(convit_name, **kwargs)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours.to(device)


def make_step(model: torch.nn.Module, case: str, batch_size: int, device: str):
    size = CASES[case][2]["img_size"]
    images = torch.randn(batch_size, 3, size, size, device=device)
    labels = torch.randint(0, CASES[case][2]["num_classes"], (batch_size,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    model.train()

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(case: str, device: str, args: argparse.Namespace) -> list[Result]:
    """Time single steps in rotation (ours, timm, deit, timm, deit, ours, ...) after ``warmup`` steps each.

    Throughput = batch / median step time; adjacent steps of different models see the same machine
    load, so the per-round ratios (see ``ratios``) stay meaningful on a shared, noisy CPU.
    """
    steps, results = {}, {}
    for impl in IMPLS:
        model = build(impl, case, device)
        steps[impl] = make_step(model, case, args.batch_size, device)
        name = {"deit": CASES[case][1], "timm_deit": TIMM_DEIT[CASES[case][1]]}.get(impl, CASES[case][0])
        results[impl] = Result(device, case, impl, name, args.batch_size)
        for _ in range(args.warmup):
            steps[impl]()
    for round_index in range(args.steps):
        shift = round_index % len(IMPLS)
        for impl in IMPLS[shift:] + IMPLS[:shift]:  # rotate who goes first
            sync(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            steps[impl]()
            sync(device)
            results[impl].step_img_per_s.append(args.batch_size / (time.perf_counter() - start))
            if device == "cuda":
                peak = torch.cuda.max_memory_allocated() / 2**20
                results[impl].peak_mem_mib = max(results[impl].peak_mem_mib or 0.0, peak)
    for r in results.values():
        r.img_per_s = statistics.median(r.step_img_per_s)
    return list(results.values())


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def cpu_peak_worker(impl: str, case: str, batch_size: int) -> float:
    """MiB the RSS rises above its pre-training level during two training steps.

    Sampled every millisecond from another thread (torch kernels release the GIL): this is the memory
    the step itself needs (activations, gradients, optimizer state), without the model-building peak.
    """
    step = make_step(build(impl, case, "cpu"), case, batch_size, "cpu")
    gc.collect()
    before, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    step()
    step()
    done.set()
    sampler.join()
    return max(peak[0], _rss_mib()) - before


def cpu_peak(impl: str, case: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--worker", impl, case, "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _paired_ratio(a: Result, b: Result) -> dict[str, float]:
    """Median and interquartile range over rounds of a/b throughput (each round's steps ran back to back under
    the same load)."""
    per_round = sorted(x / y for x, y in zip(a.step_img_per_s, b.step_img_per_s))
    if len(per_round) < 2:
        return dict(median=per_round[0], q1=per_round[0], q3=per_round[0], rounds=len(per_round))
    q1, _, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
    return dict(median=statistics.median(per_round), q1=q1, q3=q3, rounds=len(per_round))


RATIOS = {  # name -> (numerator impl, denominator impl)
    "speed_ours_vs_timm": ("ours", "timm"),
    "speed_convit_vs_deit": ("ours", "deit"),
    "speed_deit_vs_timm_deit": ("deit", "timm_deit"),
}


def ratios(results: list[Result]) -> list[dict]:
    """Per device and case: ours/timm ConViT speed and memory, ConViT/DeiT speed, our DeiT / timm's DeiT speed."""
    rows = []
    for device, case in sorted({(r.device, r.case) for r in results}):
        by = {r.impl: r for r in results if r.device == device and r.case == case}
        mem = by["ours"].peak_mem_mib / by["timm"].peak_mem_mib if by["ours"].peak_mem_mib and by["timm"].peak_mem_mib else None
        rows.append(dict(device=device, case=case, mem_ours_vs_timm=mem,
                         **{name: _paired_ratio(by[a], by[b]) for name, (a, b) in RATIOS.items()}))
    return rows


def print_table(results: list[Result], summary: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Training step throughput (forward + backward + AdamW)")
    for col in ("device", "case", "impl", "model", "batch", "img/s (median)", "min-max", "peak MiB"):
        table.add_column(col, justify="right" if col in ("batch", "img/s (median)", "peak MiB") else "left")
    for r in results:
        rounds = f"{min(r.step_img_per_s):.1f}-{max(r.step_img_per_s):.1f}"
        mem = f"{r.peak_mem_mib:.0f}" if r.peak_mem_mib is not None else "-"
        table.add_row(r.device, r.case, r.impl, r.model, str(r.batch_size), f"{r.img_per_s:.1f}", rounds, mem)
    ratio_table = Table(title="Ratios: median of per-round ratios [interquartile range]")
    for col in ("device", "case", "ConViT ours/timm speed", "ours/timm memory", "ConViT/DeiT speed (ours)",
                "DeiT ours/timm speed"):
        ratio_table.add_column(col)

    def fmt(r: dict[str, float]) -> str:
        return f"{r['median']:.2f}x [{r['q1']:.2f}-{r['q3']:.2f}]"

    for s in summary:
        mem = f"{s['mem_ours_vs_timm']:.2f}x" if s["mem_ours_vs_timm"] is not None else "-"
        ratio_table.add_row(s["device"], s["case"], fmt(s["speed_ours_vs_timm"]), mem, fmt(s["speed_convit_vs_deit"]),
                            fmt(s["speed_deit_vs_timm_deit"]))
    Console(width=max(Console().width, 150)).print(table, ratio_table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="images per step on CPU")
    parser.add_argument("--cuda-batch-size", type=int, default=128, help="images per step on CUDA")
    parser.add_argument("--steps", type=int, default=12, help="timed rounds (one step per model each), interleaved")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda"], help="default: cpu, plus cuda if present")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--no-cpu-memory", action="store_true", help="skip the per-model subprocesses measuring CPU RSS")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batch_size", "cuda_batch_size", "steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if "cuda" in (args.devices or []) and not torch.cuda.is_available():
        parser.error("--devices cuda: no CUDA device is available here")
    return args


def pin_threads(threads: int) -> list[int]:
    """torch's intra-op threads = ``threads``, and the process (its children too) on that many cores, so the OS
    does not move the work around between rounds. Returns the cores used."""
    torch.set_num_threads(threads)
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)
    return cores


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = pin_threads(args.threads)
    if args.worker:
        print(cpu_peak_worker(*args.worker, args.batch_size))
        return 0
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; {args.threads} thread(s) on "
          f"core(s) {cores}", file=sys.stderr)
    results: list[Result] = []
    for device in devices:
        run_args = argparse.Namespace(**vars(args))
        if device == "cuda":
            run_args.batch_size = args.cuda_batch_size
        for case in args.cases:
            print(f"timing {case} on {device} (batch {run_args.batch_size}, {args.steps} steps per model)", file=sys.stderr)
            case_results = time_interleaved(case, device, run_args)
            if device == "cpu" and not args.no_cpu_memory:
                for r in case_results:
                    r.peak_mem_mib = cpu_peak(r.impl, case, run_args)
            results += case_results
    summary = ratios(results)
    print_table(results, summary)
    load_after = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}, after: "
          f"{' '.join(f'{x:.2f}' for x in load_after)} (1, 5, 15 min)")
    if args.out:
        meta = dict(torch=torch.__version__, threads=args.threads, cores=cores, steps=args.steps, warmup=args.warmup,
                    load_before=load_before, load_after=load_after,
                    cuda_device=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    command=" ".join([Path(sys.executable).name, *sys.argv]))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(meta=meta, results=[asdict(r) for r in results], ratios=summary), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
