"""Where a sweep logs, decided without importing mlflow (about 2 s): what ``submit`` (dry run or not) and
``--show-config`` need. The one home of the embedded store's name, of :func:`sweep_tracking_uri` (the precedence
rule; orchestrator.submit.tracking_uri_for calls it) and of the checks of http(s) and sqlite URIs;
:func:`orchestrator.tracking.check_tracking_uri` adds MLflow's own judgement of the other schemes.
"""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from orchestrator.errors import OrchestratorError
from orchestrator.workdir import recorded_tracking_uri

DB_NAME = "mlflow.db"  # the embedded store, in the working folder


def default_tracking_uri(workdir: Path) -> str:
    """The embedded store: a sqlite file inside the working folder, no server."""
    return f"sqlite:///{(workdir / DB_NAME).resolve()}"


def sweep_tracking_uri(workdir: Path, name: str, cli_uri: str | None, spec_uri: str | None) -> str:
    """--tracking-uri, the file's tracking.uri, the URI this sweep was first submitted with, $MLFLOW_TRACKING_URI,
    then the embedded store (orchestrator.submit.tracking_uri_for)."""
    return (cli_uri or spec_uri or recorded_tracking_uri(workdir, name) or os.environ.get("MLFLOW_TRACKING_URI")
            or default_tracking_uri(workdir))


def check_uri_without_mlflow(uri: str, timeout_s: float = 5.0) -> bool:
    """Judge an http(s) or sqlite tracking URI (True: it can work; OrchestratorError with one line saying what is
    wrong otherwise); False for any other scheme, which only MLflow's store registry can judge
    (orchestrator.tracking.check_tracking_uri)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as answer:
                if answer.status == 200:
                    return True
                reason = f"HTTP {answer.status}"
        except (OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc))
        raise OrchestratorError(f"no MLflow server answers at {uri} ({reason}); start one (convit-sweep server) or "
                                "fix --tracking-uri / tracking.uri")
    if parsed.scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        if not db.parent.is_dir():
            raise OrchestratorError(f"tracking URI {uri}: the folder {db.parent} does not exist; create it or "
                                    "choose another --tracking-uri")
        return True
    return False
