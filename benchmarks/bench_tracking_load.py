"""Many trials logging at once to one MLflow tracking server: PostgreSQL-backed (postgres/start.sh) vs
sqlite-backed, through this project's logging path (orchestrator.tracking.Tracker.log_epoch, one log_batch per
epoch, as a trial does).

The metric set is real: one smoke ConViT trial (convit_tiny, the attention analysis on) is trained first and its
last metrics.jsonl row — loss, accuracy, learning rate, timing, per-layer gating and nonlocality — is what every
writer logs, 200 epochs each. Writers are separate processes started together. Afterwards every run's history is
read back: a lost or duplicated step is counted, never assumed away.

    sudo postgres/start.sh      # once (the benchmark uses $CONVIT_PG_DIR, default /var/tmp/convit-postgres)
    python benchmarks/bench_tracking_load.py --writers 16 --epochs 200
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def real_metric_row(folder: Path) -> dict[str, float]:
    from convit.config import TrialConfig
    from convit.engine import run_trial

    cfg = TrialConfig.from_dict({"preset": "smoke", "epochs": 1, "analysis_every": 1})
    run_trial(cfg, folder / "trial")
    rows = [json.loads(line) for line in (folder / "trial" / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]


def writer(uri: str, experiment_id: str, row: dict[str, float], epochs: int, ready: "mp.Queue[int]",
           go: "mp.synchronize.Event", out: "mp.Queue[tuple[str, object]]") -> None:
    try:
        from orchestrator.tracking import Tracker

        tracker = Tracker(uri)
        run_id = tracker.client.create_run(experiment_id).info.run_id
        ready.put(os.getpid())
        go.wait()
        latencies = []
        for epoch in range(epochs):
            values = {**row, "epoch": epoch}
            t0 = time.perf_counter()
            tracker.log_epoch(run_id, epoch, values)
            latencies.append(time.perf_counter() - t0)
        tracker.end_run(run_id, "FINISHED")
        out.put((run_id, latencies))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the benchmark
        ready.put(-1)
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def load(uri: str, name: str, row: dict[str, float], writers: int, epochs: int) -> dict[str, object]:
    from orchestrator.tracking import Tracker, split_per_head

    tracker = Tracker(uri)
    experiment_id = tracker.experiment_id(f"load-{name}-{int(time.time())}")
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=writer, args=(uri, experiment_id, row, epochs, ready, go, out)) for _ in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:  # every writer has imported mlflow and created its run: then they all start at once
        if ready.get(timeout=600) == -1:
            raise SystemExit(f"a writer failed: {out.get()[1]}")
    start = time.time()
    go.set()
    results = [out.get(timeout=3600) for _ in procs]
    wall = time.time() - start
    for p in procs:
        p.join()
    errors = [detail for run_id, detail in results if run_id == "error"]
    if errors:
        raise SystemExit(f"{len(errors)} writer(s) failed: {errors[0]}")
    scalars, _ = split_per_head(row)
    layer_key = sorted(k for k in scalars if "/" in k)[0]
    latencies = sorted(x for _, lat in results for x in lat)  # type: ignore[union-attr]
    lost = duplicated = 0
    for run_id, _ in results:
        for key in ("epoch", "train_loss", layer_key):
            history = [step for step, _ in tracker.metric_history(str(run_id), key)]
            lost += len(set(range(epochs)) - set(history))
            duplicated += len(history) - len(set(history))
    return {"store": name, "writers": writers, "epochs": epochs, "metrics_per_epoch": len(scalars) + 1,
            "checked": ["epoch", "train_loss", layer_key], "lost": lost, "duplicated": duplicated,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))], "wall_s": wall,
            "epochs_per_s": writers * epochs / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--pg-dir", type=Path, default=Path(os.environ.get("CONVIT_PG_DIR", "/var/tmp/convit-postgres")))
    parser.add_argument("--stores", default="postgresql,sqlite")
    args = parser.parse_args()
    from orchestrator.process_env import fail_fast_on_outages
    from orchestrator.server import free_port, start_server

    fail_fast_on_outages()
    tmp = Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    row = real_metric_row(tmp)
    print(f"metric set: {len(row)} values per epoch, a smoke ConViT-Ti trial with the attention analysis (scalars in "
          "one log_batch, per-head values as a table artifact)", flush=True)
    rows = []
    for store in args.stores.split(","):
        if store == "postgresql":
            os.environ["PGPASSFILE"] = str(args.pg_dir / "pgpass")
            backend = (args.pg_dir / "mlflow-uri").read_text().strip()
        else:
            backend = None
        server = start_server(tmp / store, port=free_port(), backend_store_uri=backend)
        try:
            rows.append(load(server.uri, store, row, args.writers, args.epochs))
        finally:
            server.stop()
        print(json.dumps(rows[-1]), flush=True)
    print("\n| store | writers x epochs | scalars/epoch | lost | duplicated | log_batch p50 | p99 | epochs/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['store']} | {r['writers']} x {r['epochs']} | {r['metrics_per_epoch']} | {r['lost']} | "
              f"{r['duplicated']} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['epochs_per_s']:.0f} |")


if __name__ == "__main__":
    main()
