"""Look at a sweep in MLflow's UI as a researcher would: a real ``mlflow server`` over the working folder's store,
headless Chromium (the Debian ``chromium`` package), three pages rendered and saved as PNG screenshots with the
text each page shows.

    python benchmarks/mlflow_browser.py --workdir runs --sweep quickstart --out docs/img

Pages: the sweep's trials in the runs table (the saved view that ``submit`` records, see
orchestrator/mlflow_views.py), the sweep's parent run (its description holds the summary table), and the first
trial's run page. ``tests/test_mlflow_browser.py`` runs it against a fresh smoke sweep and checks what the pages
say; the README's screenshots come from it.
"""
from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from orchestrator.mlflow_views import run_url, view_url  # noqa: E402
from orchestrator.server import free_port, start_server  # noqa: E402
from orchestrator.tracking import Tracker, default_tracking_uri  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = "1600,1000"
RENDER_BUDGET_MS = 20000  # virtual time for the single-page app to fetch and render


@dataclass
class Page:
    name: str
    url: str
    text: str  # what the rendered page shows (tags and scripts stripped)
    screenshot: Path


def find_browser() -> str | None:
    return next((path for b in BROWSERS if (path := shutil.which(b))), None)


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={WINDOW}", f"--virtual-time-budget={RENDER_BUDGET_MS}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def render(browser: str, name: str, url: str, out: Path) -> Page:
    shot = out / f"mlflow_{name}.png"
    _chromium(browser, f"--screenshot={shot}", url)
    dom = _chromium(browser, "--dump-dom", url).stdout
    return Page(name, url, visible_text(dom), shot)


def capture(workdir: Path, sweep: str, out: Path, experiment: str | None = None,
            browser: str | None = None) -> list[Page]:
    """Start a server on a free 127.0.0.1 port, render the three pages, stop the server (by its PID)."""
    browser = browser or find_browser()
    if browser is None:
        raise SystemExit(f"no headless browser found (tried {', '.join(BROWSERS)}); apt-get install chromium")
    tracker = Tracker(default_tracking_uri(workdir))
    experiment_id = tracker.experiment_id(experiment or sweep, create=False)
    parent = tracker.find_sweep_run(experiment or sweep, sweep)
    if experiment_id is None or parent is None:
        raise SystemExit(f"no sweep '{sweep}' in {default_tracking_uri(workdir)}")
    trial = next(iter(tracker.trial_runs(experiment or sweep, sweep).values()), None)
    out.mkdir(parents=True, exist_ok=True)
    server = start_server(workdir, port=free_port())
    try:
        pages = [render(browser, "runs", view_url(server.uri, experiment_id, sweep), out),
                 render(browser, "sweep_run", run_url(server.uri, experiment_id, parent.info.run_id), out)]
        if trial is not None:
            pages.append(render(browser, "trial_run", run_url(server.uri, experiment_id, trial.info.run_id), out))
        return pages
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs"))
    parser.add_argument("--sweep", required=True)
    parser.add_argument("--experiment", default=None, help="the sweep's MLflow experiment (default: its name)")
    parser.add_argument("--out", type=Path, default=Path("mlflow-screenshots"))
    args = parser.parse_args()
    for page in capture(args.workdir, args.sweep, args.out, args.experiment):
        print(f"{page.name}: {page.screenshot}\n  {page.url}\n  {page.text[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
