"""MLflow's tracking server on a real PostgreSQL (postgres/start.sh, its own data folder, 127.0.0.1, a generated
password read by libpq from PGPASSFILE): a sweep logs every step once through the server, and neither a 60 s outage
of the database under it nor then one of the server itself costs a trial or a step. Started and
stopped by PID, like the SLURM daemons."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from orchestrator.server import free_port, start_server
from orchestrator.tracking import Tracker
from tests.test_local import REPO, SMOKE, cli, cli_env, steps, wait_for
from convit.records import read_metrics

pytestmark = pytest.mark.slow
OUTAGE_S = 30
RETRY_S = 5  # the trial retries a store that stopped answering this often ($CONVIT_TRACKING_RETRY_S; 30 s default)
EPOCHS = 34  # ~45 s at full speed, ~70 s through both outages: it ends about when the second one does (either way
#              is right: a trial that ends during an outage is logged by the next submission)


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "postgres/start.sh runs as root"
    if not any(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL is not installed (apt-get install postgresql)"
    return None


class Postgres:
    def __init__(self, folder: Path, port: int):
        self.env = {**os.environ, "CONVIT_PG_DIR": str(folder), "CONVIT_PG_PORT": str(port)}
        self.folder = folder

    def run(self, script: str) -> str:
        out = subprocess.run(["bash", str(REPO / "postgres" / script)], env=self.env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    @property
    def uri(self) -> str:
        return (self.folder / "mlflow-uri").read_text().strip()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    problem = _problem()
    if problem:
        pytest.skip(problem)
    folder = Path(f"/var/tmp/convit-pg-test-{os.getpid()}")  # the postgres user must reach it: not under /tmp/pytest-of-root
    pg = Postgres(folder, free_port())
    out = pg.run("start.sh")
    password = (folder / "pgpass").read_text().strip().rsplit(":", 1)[1]
    assert password not in out and "postgresql://mlflow@127.0.0.1" in out
    os.environ["PGPASSFILE"] = str(folder / "pgpass")  # for the server this process starts
    try:
        yield pg
    finally:
        pg.run("stop.sh")
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("PGPASSFILE", None)


def _sweep(tmp_path: Path, name: str, epochs: int, train: int = 96) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SMOKE.format(name=name, epochs=epochs, train=train, models="[deit_tiny]", workers=0)
                    .replace("base:\n", "base:\n  analysis_every: 0\n"))
    return path


def test_a_database_outage_then_a_server_outage_cost_no_trial_and_no_step(postgres: Postgres, tmp_path: Path):
    """One sweep through a PostgreSQL-backed server; the database under the server is stopped for 30 s, then (once
    it is back and the trial has reconnected) the server itself is killed (SIGKILL, its whole process group) for 30 s
    and started again on its port: the trial trains through both, one warning per outage says so, MLflow ends with
    every step exactly once, and the runs are in the database (not in a file next to the server), whose password no
    log shows."""
    port = free_port()
    server = start_server(tmp_path / "server", port=port, backend_store_uri=postgres.uri)
    work = tmp_path / "runs"
    spec = _sweep(tmp_path, "outages", epochs=EPOCHS, train=192)  # ~1.6 s an epoch here: outlasts both outages
    log = tmp_path / "submit.log"
    with open(log, "w") as out_file:  # a file, not a pipe nobody reads while it runs (a full pipe blocks it)
        submit = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--workdir",
                                   str(work), "--tracking-uri", server.uri], cwd=REPO,
                                  env={**cli_env(), "CONVIT_TRACKING_RETRY_S": str(RETRY_S)},
                                  stdout=out_file, stderr=subprocess.STDOUT, text=True)
    trained = {}
    try:
        def epochs() -> int:
            found = [p.parent for p in (work / "sweeps" / "outages" / "trials").glob("*/metrics.jsonl")]
            return len(read_metrics(found[0])) if found else 0

        def reconnected() -> bool:
            logs = (work / "sweeps" / "outages" / "trials").glob("*/trial.log")
            return any("answers again" in log.read_text() for log in logs)

        wait_for(lambda: epochs() >= 2, timeout=180, what="two epochs")
        postgres.run("stop.sh")
        before = epochs()
        time.sleep(OUTAGE_S)
        trained["database down"] = epochs() - before
        postgres.run("start.sh")
        wait_for(reconnected, timeout=60, what="the trial to reach MLflow again")
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        before = epochs()
        time.sleep(OUTAGE_S)
        trained["server down"] = epochs() - before
        server = start_server(tmp_path / "server", port=port, backend_store_uri=postgres.uri)
        submit.wait(timeout=600)
    finally:
        if submit.poll() is None:
            submit.kill()
    out = log.read_text()
    assert submit.returncode == 0, out
    # ~19 epochs fit in 30 s on an idle core (~12 with the failed calls, fewer on a busy machine); a trial that
    # waited on tracking would train one or two
    assert all(n >= 4 for n in trained.values()), f"epochs trained during each outage: {trained}"
    (trial_dir,) = list((work / "sweeps" / "outages" / "trials").iterdir())
    trial_log = (trial_dir / "trial.log").read_text()
    assert trial_log.count("is not answering") == 2 and trial_log.count("answers again") >= 1, trial_log
    again = cli("submit", str(spec), "--workdir", str(work), "--tracking-uri", server.uri)  # logs what is missing
    try:
        assert again.returncode == 0, again.stdout + again.stderr
        tracker = Tracker(server.uri)
        (run,) = tracker.trial_runs("outages", "outages").values()
        assert run.info.status == "FINISHED"
        assert steps(tracker, run.info.run_id, "epoch") == list(range(EPOCHS))  # every epoch exactly once
        assert steps(tracker, run.info.run_id, "train_loss") == list(range(EPOCHS))
        assert tracker.find_sweep_run("outages", "outages").info.status == "FINISHED"
        password = (postgres.folder / "pgpass").read_text().strip().rsplit(":", 1)[1]
        assert password not in server.log_path.read_text() and password not in out
    finally:
        server.stop()
    count = subprocess.run(["psql", postgres.uri, "-tAc", "select count(*) from runs"], capture_output=True,
                           text=True, env={**os.environ, "PGPASSFILE": str(postgres.folder / "pgpass")})
    assert count.returncode == 0 and int(count.stdout) == 2, count.stderr  # the sweep's parent run and its trial
