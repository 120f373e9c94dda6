"""Shared test fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture()
def one_torch_thread():
    """Tests of numerics run single-threaded: faster on a shared 2-core box, and reproducible reductions."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------- two lanes (xdist)
# `make test` runs the suite in two processes (pytest-xdist, --dist loadgroup) on this 2-core machine: most of the
# long tests wait (on SLURM's scheduler, on Ray starting, on a server coming back) rather than compute. The tests
# that use the shared local SLURM cluster or start Ray run one after another in one lane ("cluster": the cluster's
# nodes and Ray's ports are shared state); the other end-to-end tests run one after another in the other lane
# ("end-to-end": they start servers, trials and signals whose timing assumes one such test at a time); the
# short tests fill in wherever a lane is free. A plain `pytest` (no -n) runs everything in one process, as before.
CLUSTER_MARKERS = ("slurm", "ray")
END_TO_END_MARKERS = ("slow",)
END_TO_END_MODULES = ("test_local", "test_local_warm_start", "test_concurrency", "test_train_door", "test_engine_cli",
                      "test_mlflow_browser", "test_cli_robustness", "test_cli_server", "test_cli_finished",
                      "test_cli_speed", "test_disk_full", "test_datasets", "test_tracking", "test_cli")


def lane_of(item: pytest.Item) -> str | None:
    if any(item.get_closest_marker(m) for m in CLUSTER_MARKERS):
        return "cluster"
    if any(item.get_closest_marker(m) for m in END_TO_END_MARKERS) or item.module.__name__.split(".")[-1] in END_TO_END_MODULES:
        return "end-to-end"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        lane = lane_of(item)
        if lane:
            item.add_marker(pytest.mark.xdist_group(lane))
