"""The dashboard on a real search: a tiny emoDARTS search on real RAVDESS recordings, submitted through the API and
run to its end by the service's worker path (`workers.runner.execute`: the DbReporter, the lease, the result files),
then shown in headless Chromium. What the page draws is compared with what the API serves of that search. The
search is tests/store/test_progress_events.py's tiny one (4 actors, one small cell, 2 epochs a stage): seconds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from nas.reporting import STEP_GENOME
from nas.settings import Settings
from nas.store import repository as repo
from tests.conftest import link_actors
from tests.dashboard.conftest import LiveServer, serve
from tests.dashboard.test_pages import (
    attributes,
    cell_edges,
    console_errors,
    open_page,
    screenshot,
    series,
    texts,
    wait,
)
from tests.store.test_progress_events import ACTORS, tiny_darts
from workers.runner import RunnerConfig, execute

WORKER = "dashboard-test-worker"
CELLS = ("normal", "reduce", "seq")


@pytest.fixture
def finished(tmp_path: Path, ravdess_root: Path) -> Iterator[tuple[LiveServer, str]]:
    """The service, and the id of the tiny search it ran to completion."""
    corpus = link_actors(tmp_path / "corpus", ravdess_root, ACTORS)
    settings = Settings(  # the corpus is links into the real recordings: both are data roots
        data_dir=tmp_path / "sernas",
        database_url=f"sqlite:///{tmp_path / 'sernas.db'}",
        data_roots=[corpus, ravdess_root],
    )
    with contextmanager(serve)(settings) as live:
        spec = tiny_darts(corpus).model_dump(mode="json")
        submitted = httpx.post(f"{live.url}/searches", json={"name": "tiny emoDARTS", "spec": spec})
        assert submitted.status_code == 201, submitted.text
        search_id = submitted.json()["id"]
        claimed = repo.claim_next_search(live.sessions, WORKER, lease_seconds=600)
        assert claimed is not None and claimed.id == search_id
        config = RunnerConfig(
            db_url=settings.db_url, owner=WORKER, results_dir=settings.results_dir, cache_dir=tmp_path / "cache"
        )
        assert execute(search_id, config) == "completed"
        yield live, search_id


def _genome_edges(cell: dict[str, Any]) -> list[list[str]]:
    """The edges a drawing of a cell must show, as the page names them: [from state, to node, op]."""
    return sorted(
        [f"s{edge['input']}", f"s{node + 2}", edge["op"]] for node, edges in enumerate(cell["nodes"]) for edge in edges
    )


def test_the_dashboard_shows_a_real_finished_search(browser, finished):
    live, search = finished
    api = httpx.Client(base_url=live.url)
    browser.get_log("browser")
    open_page(browser, live, f"#/search/{search}")

    trials = api.get(f"/searches/{search}/trials", params={"sort": "-id", "limit": 50}).json()["items"]
    assert [t["stage"] for t in reversed(trials)] == ["search", "retrain", "final"]
    wait(browser, lambda d: attributes(d, "#trials-table tbody tr", "data-trial") == [str(t["id"]) for t in trials])
    assert browser.find_element(By.CSS_SELECTOR, "#search-header .badge").text == "completed"
    folds = api.get(f"/searches/{search}/overview").json()["folds"]
    assert len(texts(browser, "#folds-table tbody tr")) == len(folds) == 2  # fold 0 and the final model

    # One learning curve per trial, a point per epoch it reported.
    steps = {t["key"]: api.get(f"/trials/{t['id']}").json()["steps"] for t in trials}
    curves = wait(browser, lambda d: (s := series(d, "curve-score")) and len(s) == len(trials) and s, "the curves")
    assert {s["name"]: len(s["data"]) for s in curves} == {key: len(epochs) for key, epochs in steps.items()}
    pareto = api.get(f"/searches/{search}/pareto").json()
    drawn = wait(browser, lambda d: series(d, "pareto-chart"), "the Pareto chart")
    assert sum(len(s["data"]) for s in drawn) == pareto["considered"] == 2  # the retrained and the final model

    # The slider goes over the supernet's search epochs, then the stored genomes; the newest is drawn.
    genomes = api.get(f"/searches/{search}/genomes").json()["genomes"]
    search_steps = steps["fold-0/search"]
    assert [(g["key"], g["epoch"]) for g in genomes[: len(search_steps)]] == [
        ("fold-0/search", s["step"]) for s in search_steps
    ]
    assert [g["genome"] for g in genomes[: len(search_steps)]] == [s["metrics"][STEP_GENOME] for s in search_steps]
    wait(browser, lambda d: d.find_element(By.ID, "genome-slider").get_attribute("max") == str(len(genomes) - 1))
    newest = genomes[-1]["genome"]["architecture"]
    for cell in CELLS:
        if newest.get(cell) is not None:
            assert cell_edges(browser, cell) == _genome_edges(newest[cell]), cell
    screenshot(browser, "search.png")  # the README's
    assert console_errors(browser) == []
    browser.get("about:blank")
