"""/docs (Swagger UI) and /redoc (ReDoc) load their assets from the service itself: they work offline."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from nas.settings import Settings


class _Assets(HTMLParser):
    """The URLs a page loads: script sources and linked stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        url = named.get("src") if tag == "script" else named.get("href") if tag == "link" else None
        if url:
            self.urls.append(url)


@pytest.fixture(name="client")
def client_fixture(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'sernas.db'}")
    with TestClient(create_app(settings)) as client:
        yield client


# Each page, and for each asset it must load: (content type, a string the real file holds).
PAGES = {
    "/docs": {
        "swagger-ui-bundle.js": ("javascript", "SwaggerUIBundle"),
        "swagger-ui.css": ("text/css", ".swagger-ui"),
        "favicon.png": ("image/png", "PNG"),
    },
    "/redoc": {
        "redoc.standalone.js": ("javascript", "Redoc"),
        "favicon.png": ("image/png", "PNG"),
    },
}


@pytest.mark.parametrize("page", PAGES)
def test_the_docs_pages_load_only_what_the_service_serves(client, page):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text  # no CDN, no web font
    parser = _Assets()
    parser.feed(response.text)
    by_name = {urlsplit(url).path.rsplit("/", 1)[-1]: url for url in parser.urls}
    assert set(by_name) == set(PAGES[page]), parser.urls
    for name, (content_type, marker) in PAGES[page].items():
        url = by_name[name]
        assert url.startswith("/") and not url.startswith("//"), url  # on this server
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert content_type in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert marker.encode() in asset.content[:2_000_000], url
        assert len(asset.content) > (100 if name.endswith(".png") else 100_000), url  # the real thing


def test_swagger_ui_reads_this_servers_document_and_asks_no_online_validator(client):
    page = client.get("/docs").text
    assert "url: '/openapi.json'" in page
    assert '"validatorUrl": null' in page
    assert client.get("/openapi.json").status_code == 200
