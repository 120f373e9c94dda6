"""The trial's durable text records in out_dir: config.json, metrics.jsonl, final.json.

metrics.jsonl is the source of truth for per-epoch metrics.  Each checkpoint carries the metrics of the
epochs it covers, so on resume the file is rewritten from the checkpoint: lines for epochs that will be
re-run are dropped and nothing is duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_bytes
from .control import ConfigMismatch

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def read_json(path: Path) -> Any | None:
    return json.loads(path.read_text()) if path.is_file() else None


def check_same_trial(out_dir: Path, config_hash: str) -> None:
    """Refuse to resume a different trial into this out_dir."""
    previous = read_json(out_dir / CONFIG_FILE)
    if previous is not None and previous.get("config_hash") != config_hash:
        raise ConfigMismatch(
            f"{out_dir} holds a trial with config hash {previous.get('config_hash')}, but this config hashes to "
            f"{config_hash}: use a new output directory, or the original config "
            f"({out_dir / CONFIG_FILE}) to resume"
        )


def append_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    with open(out_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(metrics, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_metrics(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_bytes(out_dir / METRICS_FILE, lambda f: f.write(text.encode()))


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
