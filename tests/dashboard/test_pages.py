"""The dashboard in headless Chromium against the real service (uvicorn on loopback, a SQLite study database
filled as the strategies fill it): what it shows is what the API holds, its buttons and form change the database,
it follows a running search live, and it logs no error to the console."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from nas.reporting import TrialState
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.dashboard import GENOTYPE_EDGES, darts_search, sampled_search
from tests.dashboard.conftest import WAIT_SECONDS, LiveServer

# Set to a folder to keep the screenshots the tests take (the README's comes from here).
SCREENSHOTS = os.environ.get("SERNAS_DASHBOARD_SCREENSHOTS")


def wait(driver: Any, condition: Any, message: str = "", timeout: float = WAIT_SECONDS) -> Any:
    """`condition(driver)` once it is truthy; live refreshes redraw elements, so a stale one is asked again."""
    waiting = WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
    )
    return waiting.until(lambda d: condition(d), message)


def console_errors(driver: Any, expected: tuple[str, ...] = ()) -> list[str]:
    """Errors the page logged, less those that contain one of `expected`."""
    entries = driver.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE" and not any(x in e["message"] for x in expected)]


def click(driver: Any, selector: str) -> None:
    """Click what `selector` matches; a live refresh may redraw it between finding and clicking: then again."""
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True, f"clicking {selector}")


def texts(driver: Any, selector: str) -> list[str]:
    """The text of each element `selector` matches, read in one go (a redraw cannot come between two of them)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim())", selector
    )


def attributes(driver: Any, selector: str, name: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]))", selector, name
    )


def series(driver: Any, element_id: str) -> list[dict[str, Any]] | None:
    """The series an ECharts chart draws: name, type and data, as the chart itself holds them."""
    return driver.execute_script(
        """const el = document.getElementById(arguments[0]);
        const chart = el && echarts.getInstanceByDom(el);
        if (!chart) return null;
        return chart.getOption().series.map(s => ({name: s.name, type: s.type, data: s.data}));""",
        element_id,
    )


def cell_edges(driver: Any, cell: str) -> list[list[str]]:
    """The labelled edges ([from, to, op], sorted) of the drawn `cell` once Cytoscape has laid it out (a live refresh
    may draw it anew: then it is read again)."""
    edges = wait(
        driver,
        lambda d: d.execute_script(
            """const element = document.querySelector(`[data-cell=${arguments[0]}]`);
            if (!element || !element._cy) return null;
            return element._cy.edges().filter(e => e.data('label'))
                .map(e => [e.source().id(), e.target().id(), e.data('label')]);""",
            cell,
        ),
        f"the {cell} cell drawn",
    )
    return sorted(edges)


def open_page(driver: Any, live: LiveServer, hash_: str = "#/") -> None:
    driver.get(f"{live.url}/{hash_}")


def screenshot(driver: Any, name: str) -> None:
    """The whole page (up to 4000 pixels tall) into SERNAS_DASHBOARD_SCREENSHOTS, when that is set."""
    if not SCREENSHOTS:
        return
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], min(height + 140, 4000))  # + the browser's own frame
    time.sleep(0.5)  # the charts redraw at the new size
    driver.save_screenshot(str(Path(SCREENSHOTS) / name))
    driver.set_window_size(size["width"], size["height"])


# ---------------------------------------------------------------- the searches


def test_the_searches_table_shows_the_stored_searches_and_cancel_cancels(page, live):
    darts = darts_search(live.sessions)
    queued = sampled_search(live.sessions, 10)
    api = httpx.Client(base_url=live.url)
    open_page(page, live)
    wait(page, lambda d: len(texts(d, "#searches-table tbody tr")) == 2, "the searches table")

    rows = {r.get_attribute("data-search"): r for r in page.find_elements(By.CSS_SELECTOR, "#searches-table tbody tr")}
    assert set(rows) == {darts, queued}
    darts_row, queued_row = rows[darts], rows[queued]
    assert darts_row.find_element(By.CSS_SELECTOR, ".status").text == "completed"
    summary = api.get(f"/searches/{darts}").json()["summary"]
    assert (
        darts_row.find_element(By.CSS_SELECTOR, ".test-ua").text
        == f"{summary['ua_mean']:.3f} ± {summary['ua_std']:.3f}"
    )
    best = api.get("/best-scores", params={"search_id": [darts, queued]}).json()["best"]
    assert darts_row.find_element(By.CSS_SELECTOR, ".best").text == f"{best[darts]:.3f}"
    assert queued_row.find_element(By.CSS_SELECTOR, ".best").text == f"{best[queued]:.3f}"
    assert "10/10 trials" in queued_row.text  # 8 complete and 2 pruned: all finished
    assert not darts_row.find_elements(By.CSS_SELECTOR, "button.cancel")  # nothing to cancel

    queued_row.find_element(By.CSS_SELECTOR, "button.cancel").click()
    wait(page, lambda d: repo.get_search(live.sessions, queued).status == SearchStatus.CANCELLED, "cancelled in the db")
    wait(
        page,
        lambda d: d.find_element(By.CSS_SELECTOR, f"tr[data-search='{queued}'] .status").text == "cancelled",
        "the row shows it",
    )
    page.find_element(By.CSS_SELECTOR, f"tr[data-search='{queued}'] button.resume").click()
    wait(page, lambda d: repo.get_search(live.sessions, queued).status == SearchStatus.QUEUED, "resumed in the db")
    assert console_errors(page) == []


def _field(driver: Any, loc: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f".field[data-loc='{loc}']")


def _type(driver: Any, loc: str, text: str) -> None:
    control = _field(driver, loc).find_element(By.CSS_SELECTOR, "input, textarea")
    control.clear()
    control.send_keys(text)


def test_a_search_submitted_from_the_form_is_queued_with_its_overrides(page, live, ravdess_root):
    open_page(page, live)
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, ".field[data-loc='body.overrides.options.search_epochs']"))
    Select(page.find_element(By.ID, "strategy")).select_by_value("darts")
    Select(page.find_element(By.ID, "preset")).select_by_value("emodarts-demo")
    _type(page, "body.name", "from the form")
    _type(page, "body.corpus.root", str(ravdess_root))
    _type(page, "body.corpus.classes", "calm, angry")
    _type(page, "body.folds.only", "0")
    _type(page, "body.overrides.options.search_epochs", "3")
    page.find_element(By.ID, "submit-search").click()
    link = wait(page, lambda d: d.find_elements(By.ID, "submitted"), "the queued search's link")[0]
    search_id = link.get_attribute("href").rsplit("/", 1)[1]

    stored = repo.get_search(live.sessions, search_id)
    assert (stored.name, stored.status, stored.strategy) == ("from the form", SearchStatus.QUEUED, "darts")
    assert stored.spec["options"]["search_epochs"] == 3 and stored.spec["corpus"]["classes"] == ["calm", "angry"]
    assert stored.spec["folds"]["only"] == [0] and stored.spec["corpus"]["root"] == str(ravdess_root.resolve())

    cancel = f"tr[data-search='{search_id}'] button.cancel"
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, cancel), "its row")[0].click()
    wait(page, lambda d: repo.get_search(live.sessions, search_id).status == SearchStatus.CANCELLED, "cancelled")
    assert console_errors(page) == []


def test_an_invalid_value_shows_the_apis_message_next_to_its_field(page, live, ravdess_root, tmp_path):
    body = {
        "name": "invalid",
        "strategy": "darts",
        "preset": "emodarts-demo",
        "corpus": {"name": "ravdess", "root": str(ravdess_root)},
        "overrides": {"options.search_epochs": 0},
    }
    refused = httpx.post(f"{live.url}/searches", json=body).json()["error"]
    [expected] = [f["msg"] for f in refused["fields"] if f["loc"] == ["body", "overrides", "options.search_epochs"]]

    open_page(page, live)
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, ".field[data-loc='body.overrides.options.search_epochs']"))
    _type(page, "body.name", "invalid")
    _type(page, "body.corpus.root", str(ravdess_root))
    _type(page, "body.overrides.options.search_epochs", "0")
    page.find_element(By.ID, "submit-search").click()
    slot = ".field[data-loc='body.overrides.options.search_epochs'] .field-error"
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, slot).text, "the message next to the field")
    assert page.find_element(By.CSS_SELECTOR, slot).text == expected
    assert "greater than or equal to 1" in expected

    # A corpus outside the data roots: the API's 403 names the root, and the form says so beside it.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _type(page, "body.overrides.options.search_epochs", "2")
    _type(page, "body.corpus.root", str(outside))
    page.find_element(By.ID, "submit-search").click()
    root_slot = ".field[data-loc='body.corpus.root'] .field-error"
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, root_slot).text, "the message next to the root")
    assert "data root" in page.find_element(By.CSS_SELECTOR, root_slot).text
    assert page.find_element(By.CSS_SELECTOR, slot).text == ""  # the fixed field's message is gone
    assert repo.list_searches(live.sessions).total == 0
    # The refused submissions are the only errors: the browser reports the 422 and the 403 it received.
    assert console_errors(page, expected=("/searches - Failed to load resource",)) == []


# ---------------------------------------------------------------- one search


def test_the_search_page_shows_what_the_api_holds(page, live):
    search = darts_search(live.sessions, folds=2)
    api = httpx.Client(base_url=live.url)
    open_page(page, live, f"#/search/{search}")
    stored = api.get(f"/searches/{search}/trials", params={"sort": "-id", "limit": 50}).json()["items"]
    wait(page, lambda d: len(texts(d, "#trials-table tbody tr")) == len(stored) == 5, "the trials table")
    shown = attributes(page, "#trials-table tbody tr", "data-trial")
    assert shown == [str(t["id"]) for t in stored]  # newest first, as the API pages them

    assert len(texts(page, "#folds-table tbody tr")) == 3  # two folds and the final model
    assert page.find_element(By.CSS_SELECTOR, "[data-fact='strategy']").text == "darts"

    # Learning curves: one line per trial with epochs, each with the epochs it stored.
    curves = wait(page, lambda d: series(d, "curve-score"), "the curves")
    assert sorted(len(s["data"]) for s in curves) == [4, 4, 4, 4, 4]
    assert {s["name"] for s in curves} == {t["key"] for t in stored}

    # Pareto front and history over the trials that report a validation UA and a size.
    pareto = api.get(f"/searches/{search}/pareto").json()
    drawn = wait(page, lambda d: series(d, "pareto-chart"), "the Pareto chart")
    assert [len(s["data"]) for s in drawn] == [pareto["others_total"], len(pareto["front"])]
    assert sum(len(s["data"]) for s in drawn) == pareto["considered"] == 3
    history = api.get(f"/searches/{search}/history").json()
    drawn = wait(page, lambda d: series(d, "history-chart"), "the history chart")
    assert len(drawn[0]["data"]) == history["total"] == 3

    # The newest genome's cells drawn as graphs: exactly the genotype's edges, each labelled with its op.
    for cell, edges in GENOTYPE_EDGES.items():
        assert cell_edges(page, cell) == sorted([f"s{a}", f"s{b}", op] for a, b, op in edges), cell
    # The slider goes over each fold's search epochs (the cells derived at each), then the stored genomes.
    genomes = api.get(f"/searches/{search}/genomes").json()["genomes"]
    assert len(genomes) == 2 * 4 + 5  # two folds of 4 search epochs; 5 stored genomes
    slider = page.find_element(By.ID, "genome-slider")
    assert slider.get_attribute("max") == str(len(genomes) - 1)
    page.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
    label = page.find_element(By.ID, "genome-label").text
    assert label == f"1/{len(genomes)}: fold-0/search epoch 1 (seq_collapsed_to_skip_connect)"
    first_epoch = [op for _, _, op in cell_edges(page, "seq")]
    assert first_epoch == ["skip_connect"] * 4  # the collapsed SeqNN cell the first epochs derived
    assert page.find_element(By.CSS_SELECTOR, "#genomes .flag").text == "seq_collapsed_to_skip_connect"
    screenshot(page, "search-filled.png")

    # One fold's evolution: its 4 epochs and its stored genomes (the derived and the retrained one).
    page.find_element(By.ID, "genome-fold").send_keys("1\n")
    wait(page, lambda d: d.find_element(By.ID, "genome-slider").get_attribute("max") == "5", "fold 1's genomes")
    assert page.find_element(By.ID, "genome-label").text == "6/6: fold-1/retrain/emodarts"
    assert console_errors(page) == []


def test_the_trials_table_pages_with_the_cursor_sorts_and_filters(page, live):
    search = sampled_search(live.sessions, 120)
    api = httpx.Client(base_url=live.url)
    open_page(page, live, f"#/search/{search}")

    def rows() -> list[str]:
        return attributes(page, "#trials-table tbody tr", "data-trial")

    first = api.get(f"/searches/{search}/trials", params={"sort": "-id", "limit": 50}).json()
    second = api.get(
        f"/searches/{search}/trials", params={"sort": "-id", "limit": 50, "cursor": first["next_cursor"]}
    ).json()
    wait(page, lambda d: rows() == [str(t["id"]) for t in first["items"]], "the first page")
    assert page.find_element(By.ID, "trials-range").text == "1–50 of 120"
    page.find_element(By.ID, "trials-next").click()
    wait(page, lambda d: rows() == [str(t["id"]) for t in second["items"]], "the second page")
    page.find_element(By.ID, "trials-prev").click()
    wait(page, lambda d: rows() == [str(t["id"]) for t in first["items"]], "back to the first page")

    click(page, "#trials-table th[data-sort='n_params']")
    by_size = api.get(f"/searches/{search}/trials", params={"sort": "-n_params", "limit": 50}).json()
    wait(page, lambda d: rows() == [str(t["id"]) for t in by_size["items"]], "sorted by size, largest first")

    click(page, "#trials-table th[data-sort='latency_ms']")
    by_latency = api.get(f"/searches/{search}/trials", params={"sort": "-latency_ms", "limit": 50}).json()
    wait(page, lambda d: rows() == [str(t["id"]) for t in by_latency["items"]], "sorted by latency, slowest first")
    click(page, "#trials-table th[data-sort='latency_ms']")
    fastest = api.get(f"/searches/{search}/trials", params={"sort": "latency_ms", "limit": 50}).json()
    wait(page, lambda d: rows() == [str(t["id"]) for t in fastest["items"]], "sorted by latency, fastest first")
    click(page, "#trials-next")
    fastest_next = api.get(
        f"/searches/{search}/trials", params={"sort": "latency_ms", "limit": 50, "cursor": fastest["next_cursor"]}
    ).json()
    wait(page, lambda d: rows() == [str(t["id"]) for t in fastest_next["items"]], "the next page by latency")
    shown_latency = texts(page, "#trials-table tbody td.latency")
    assert shown_latency == [f"{t['latency_ms']:.2f}" for t in fastest_next["items"]]

    Select(page.find_element(By.ID, "trial-state")).select_by_value("pruned")
    wait(page, lambda d: len(rows()) == 24, "the 24 pruned trials")
    assert set(attributes(page, "#trials-table tbody tr", "data-state")) == {"pruned"}

    # Parallel coordinates: the three sampled hyperparameters and the score, one line per completed trial.
    dims = page.execute_script(
        "return echarts.getInstanceByDom(document.getElementById('parallel-chart')).getOption().parallelAxis"
        ".map(a => a.name)"
    )
    assert sorted(dims[:-1]) == ["layers", "lr", "units"] and dims[-1] == "val_ua"
    assert len(series(page, "parallel-chart")[0]["data"]) == 96
    assert console_errors(page) == []


def test_the_trials_table_sorts_by_f1_and_filters_by_fold(page, live):
    search = darts_search(live.sessions, folds=2)
    api = httpx.Client(base_url=live.url)
    open_page(page, live, f"#/search/{search}")

    def rows() -> list[str]:
        return attributes(page, "#trials-table tbody tr", "data-trial")

    wait(page, lambda d: len(rows()) == 5, "every trial")
    click(page, "#trials-table th[data-sort='macro_f1']")
    by_f1 = api.get(f"/searches/{search}/trials", params={"sort": "-macro_f1"}).json()["items"]
    wait(page, lambda d: rows() == [str(t["id"]) for t in by_f1], "sorted by F1, best first")
    scored = [t for t in by_f1 if t["macro_f1"] is not None]
    assert len(scored) == 2  # the folds' retrained models: tested on their speakers
    assert texts(page, "#trials-table tbody td.f1")[:2] == [f"{t['macro_f1']:.3f}" for t in scored]

    page.find_element(By.ID, "trial-fold").send_keys("1\n")
    fold_1 = api.get(f"/searches/{search}/trials", params={"sort": "-macro_f1", "fold": 1}).json()
    wait(page, lambda d: rows() == [str(t["id"]) for t in fold_1["items"]], "fold 1's trials by F1")
    assert fold_1["total"] == 2 and page.find_element(By.ID, "trials-range").text == "1–2 of 2"
    assert console_errors(page) == []


def test_a_running_search_updates_live(page, live):
    search = darts_search(live.sessions, folds=1, finish=False)  # running: fold 0 done, the final model to come
    open_page(page, live, f"#/search/{search}")
    wait(page, lambda d: len(texts(d, "#trials-table tbody tr")) == 2, "the trials so far")
    wait(page, lambda d: series(d, "curve-score") and len(series(d, "curve-score")) == 2, "two curves")
    assert page.find_element(By.CSS_SELECTOR, "#search-header .badge").text == "running"

    trial = repo.start_trial(live.sessions, search, "final/retrain/emodarts", {"family": "emodarts"}, None, "final")
    repo.add_steps(live.sessions, trial, [(1, {"val_ua": 0.6, "val_loss": 0.9}), (2, {"val_ua": 0.7, "val_loss": 0.8})])
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, f"#trials-table tr[data-trial='{trial}']"), "the new trial")
    wait(page, lambda d: len(series(d, "curve-score")) == 3, "its curve")
    new_curve = next(s for s in series(page, "curve-score") if s["name"] == "final/retrain/emodarts")
    assert [point[1] for point in new_curve["data"]] == [0.6, 0.7]
    assert any("final/retrain/emodarts epoch 2" in line for line in texts(page, "#event-log li"))

    repo.finish_trial(live.sessions, trial, TrialState.COMPLETE, {"val_ua": 0.7, "params": 5000})
    repo.mark_finished(live.sessions, search, SearchStatus.COMPLETED, summary={"ua_mean": 0.7, "ua_std": 0.1})
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, "#search-header .badge").text == "completed", "completed")
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, "[data-fact='test UA (folds)']").text == "0.700 ± 0.100")
    assert console_errors(page) == []


# ---------------------------------------------------------------- trials


def test_the_trial_page_shows_its_confusion_matrix_classes_epochs_and_bundle(page, live):
    search = darts_search(live.sessions, folds=1)
    api = httpx.Client(base_url=live.url)
    retrain = api.get(f"/searches/{search}/trials", params={"stage": "retrain"}).json()["items"][0]
    trial = api.get(f"/trials/{retrain['id']}").json()
    open_page(page, live, f"#/trial/{trial['id']}")
    drawn = wait(page, lambda d: series(d, "confusion"), "the confusion matrix")[0]["data"]
    matrix = trial["metrics"]["confusion"]
    assert sorted(map(tuple, drawn)) == sorted((p, t, matrix[t][p]) for t in range(2) for p in range(2))

    per_class = {
        r.get_attribute("data-class"): r.text.split()[1:]
        for r in page.find_elements(By.CSS_SELECTOR, "#per-class tbody tr")
    }
    for label, scores in trial["metrics"]["per_class"].items():
        assert per_class[label] == [f"{scores[k]:.3f}" for k in ("precision", "recall", "f1")] + ["10"]
    ece = page.find_element(By.CSS_SELECTOR, "tr[data-metric='ece'] td").text
    assert ece == f"{trial['metrics']['ece']:.3f}"
    epochs = series(page, "epochs-chart")
    assert {s["name"] for s in epochs} >= {"val_ua", "val_loss", "train_loss"}
    assert all(len(s["data"]) == 4 for s in epochs)
    download = page.find_element(By.ID, "download")
    assert download.get_attribute("href") == f"{live.url}/trials/{trial['id']}/export"
    assert page.find_elements(By.CSS_SELECTOR, "#trial-genome [data-cell='normal']")
    screenshot(page, "trial.png")

    search_trial = api.get(f"/searches/{search}/trials", params={"stage": "search"}).json()["items"][0]
    open_page(page, live, f"#/compare/{trial['id']},{search_trial['id']}")
    header = wait(page, lambda d: texts(d, "#compare thead th"), "the comparison")
    assert header[1:] == [f"{trial['id']}: {trial['key']}", f"{search_trial['id']}: {search_trial['key']}"]
    assert len(series(page, "compare-epochs")) > 4  # the values of both trials' epochs
    assert console_errors(page) == []


def test_the_page_loads_nothing_from_outside_the_service(page, live):
    darts_search(live.sessions, folds=1)
    open_page(page, live)
    wait(page, lambda d: texts(d, "#searches-table tbody tr"), "the searches")
    time.sleep(0.3)  # let the form's requests finish
    origins = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
        ".concat([new URL(location.href).origin])"
    )
    assert set(origins) == {live.url}
    assert console_errors(page) == []
