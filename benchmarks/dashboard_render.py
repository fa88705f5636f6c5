"""Dashboard: time to first render of one search's page in headless Chromium, with 10k and 100k stored trials,
and the size of the page's assets.

The app runs under uvicorn in a thread on 127.0.0.1 over a SQLite study database in a temporary folder, holding
one search of --trials sampled configurations (bulk-inserted with SQLAlchemy core: scores, size, latency, three
hyperparameters and --epochs epochs each, every fifth pruned). Debian's chromium, driven by chromedriver, opens
`/#/search/<id>` with an empty cache; the page itself reports (performance.now(), from the start of navigation)
when the trials table shows its first page, and when every panel has drawn (trials, folds, learning curves,
optimisation history, Pareto front, parallel coordinates). Each size is loaded --runs times; the median counts.

    .venv/bin/python -m benchmarks.dashboard_render [--trials 10000 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from api.main import create_app
from api.routes.dashboard import DASHBOARD_DIR
from nas.settings import Settings
from nas.spec import CorpusSpec, spec_from_preset
from nas.store import repository as repo
from nas.store.db import make_engine, migrate, session_factory
from nas.store.models import Trial, TrialStep
from tests.live import headless_chromium, served

# The page has rendered when these hold (checked by the page on every animation frame).
TABLE_READY = "document.querySelectorAll('#trials-table tbody tr').length > 0"
CHARTS = ("curve-score", "history-chart", "pareto-chart", "parallel-chart")
ALL_READY = " && ".join(
    [TABLE_READY, "document.querySelectorAll('#folds h3').length > 0"]
    + [
        f"!!(document.getElementById('{c}') && echarts.getInstanceByDom(document.getElementById('{c}')))"
        for c in CHARTS
    ]
)
WAIT_FOR = (
    f"const [tableReady, allReady] = [() => {TABLE_READY}, () => {ALL_READY}];"
    """
const done = arguments[arguments.length - 1];
let table = null;
(function poll() {
  if (table === null && tableReady()) table = performance.now();
  if (allReady()) done([table, performance.now()]);
  else requestAnimationFrame(poll);
})();
"""
)


def fill(db_url: str, trials: int, epochs: int) -> str:
    """One search of `trials` sampled configurations; returns its id."""
    engine = make_engine(db_url)
    migrate(engine)
    sessions = session_factory(engine)
    spec = spec_from_preset("bigru-mfcc-demo", CorpusSpec(name="ravdess", root=Path("/data/ravdess")))
    search_id = repo.create_search(sessions, spec.model_dump(mode="json"), "benchmark", spec.strategy).id
    rng = random.Random(0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = 5000
    with engine.begin() as connection:
        for first in range(0, trials, batch):
            rows, steps = [], []
            for i in range(first, min(first + batch, trials)):
                units, layers = rng.choice([32, 64, 96, 128]), rng.randint(1, 2)
                metrics = {
                    "val_ua": rng.uniform(0.3, 0.9),
                    "val_wa": rng.uniform(0.3, 0.9),
                    "params": units * 1000 * layers + rng.randint(0, 999),
                    "latency_ms_p50": rng.uniform(0.5, 5.0),
                    "epochs": epochs,
                }
                rows.append(
                    {
                        "id": i + 1,
                        "search_id": search_id,
                        "key": f"fold-0/trial-{i}",
                        "params": {"units": units, "layers": layers, "lr": 10 ** rng.uniform(-4, -2)},
                        "state": "pruned" if i % 5 == 4 else "complete",
                        "metrics": metrics,
                        "n_params": metrics["params"],
                        "fold": 0,
                        "stage": "search",
                        "started_at": start + timedelta(seconds=i),
                        "finished_at": start + timedelta(seconds=i + 1),
                    }
                )
                for epoch in range(1, epochs + 1):
                    values = {"val_ua": rng.uniform(0.3, 0.9), "val_loss": 1.0 / epoch, "train_loss": 0.9 / epoch}
                    steps.append({"trial_id": i + 1, "step": epoch, "metrics": values, "created_at": start})
            connection.execute(insert(Trial), rows)
            connection.execute(insert(TrialStep), steps)
    engine.dispose()
    return search_id


def render_times(driver: Any, url: str, runs: int) -> tuple[float, float]:
    """Median ms from navigation start to the trials table, and to every panel drawn (cold cache each run)."""
    tables, alls = [], []
    for _ in range(runs):
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
        driver.get("about:blank")
        driver.get(url)
        table, everything = driver.execute_async_script(WAIT_FOR)
        tables.append(table)
        alls.append(everything)
    return statistics.median(tables), statistics.median(alls)


def asset_sizes() -> tuple[int, int]:
    """Bytes of what the page loads (page, scripts, styles, vendored libraries), raw and gzip-compressed."""
    files = [
        p
        for p in DASHBOARD_DIR.rglob("*")
        if p.is_file() and p.suffix in (".html", ".js", ".css") and "screenshots" not in p.parts
    ]
    raw = sum(p.stat().st_size for p in files)
    compressed = sum(len(gzip.compress(p.read_bytes())) for p in files)
    return raw, compressed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    raw, compressed = asset_sizes()
    print(f"assets: {raw / 1e6:.2f} MB ({compressed / 1e6:.2f} MB gzip-compressed)")
    print("| stored trials | trials table (ms) | every panel (ms) |\n|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        driver = headless_chromium(Path(folder) / "profile")
        driver.set_script_timeout(120)
        try:
            for trials in args.trials:
                db_url = f"sqlite:///{Path(folder) / f'bench-{trials}.db'}"
                search_id = fill(db_url, trials, args.epochs)
                settings = Settings(data_dir=Path(folder) / f"data-{trials}", database_url=db_url)
                with served(create_app(settings)) as url:
                    try:
                        table, everything = render_times(driver, f"{url}/#/search/{search_id}", args.runs)
                    finally:
                        driver.get("about:blank")  # closes the page's event stream before the server stops
                print(f"| {trials:,} | {table:.0f} | {everything:.0f} |", flush=True)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
