"""/docs (Swagger UI, its assets served by the service itself through fastapi-offline) renders in headless
Chromium with no network at all: every operation of the API is listed, and the page asks no other host."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.dashboard.conftest import WAIT_SECONDS


def test_swagger_ui_renders_every_operation_offline(page: Any, live: Any) -> None:
    import httpx

    paths = httpx.get(f"{live.url}/openapi.json").json()["paths"]
    operations = {(method.upper(), path) for path, item in paths.items() for method in item}
    page.get(f"{live.url}/docs")
    WebDriverWait(page, WAIT_SECONDS).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) == len(operations)
    )
    shown = page.execute_script(
        "return [...document.querySelectorAll('.opblock')].map(op => ["
        "op.querySelector('.opblock-summary-method').innerText.trim(),"
        "op.querySelector('.opblock-summary-path').getAttribute('data-path')])"
    )
    assert {tuple(op) for op in shown} == operations
    assert page.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("sernas")
    origins = page.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert origins and set(origins) == {live.url}
    assert [e["message"] for e in page.get_log("browser") if e["level"] == "SEVERE"] == []
