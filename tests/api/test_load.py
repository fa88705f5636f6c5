"""200 concurrent submissions over real HTTP: every search persisted exactly once, no server error."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from api.main import create_app
from nas.store import repository as repo
from tests.api import TOKEN, api_settings, search_body
from tests.live import served


def test_concurrent_submissions_are_persisted_exactly_once(db_url, tmp_path, ravdess_root):
    settings = api_settings(db_url, tmp_path, ravdess_root, api_token=TOKEN)
    app = create_app(settings)
    bodies: list[dict[str, Any]] = []
    for i in range(200):
        if i < 100:  # no key: each is a new search
            bodies.append(search_body(ravdess_root, name=f"plain-{i}", seed=i))
        elif i < 150:  # a key of its own
            bodies.append(search_body(ravdess_root, name=f"keyed-{i}", idempotency_key=f"own-{i}"))
        else:  # ten keys, each sent five times at once with the same body
            bodies.append(search_body(ravdess_root, name=f"dup-{i % 10}", idempotency_key=f"dup-{i % 10}"))

    with served(app) as url:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with (
            httpx.Client(base_url=url, limits=limits, timeout=120, headers=headers) as http,
            ThreadPoolExecutor(max_workers=48) as pool,
        ):
            responses = list(pool.map(lambda body: http.post("/searches", json=body), bodies))
        sessions = app.state.sessions
        stored = repo.list_searches(sessions, limit=1000)

    assert [r.status_code for r in responses if r.status_code not in (200, 201)] == []
    ids_by_name: dict[str, set[str]] = defaultdict(set)
    for response in responses:
        ids_by_name[response.json()["name"]].add(response.json()["id"])
    assert len(ids_by_name) == 160 and all(len(ids) == 1 for ids in ids_by_name.values())
    assert stored.total == 160
    assert sorted(s.id for s in stored.items) == sorted(next(iter(ids)) for ids in ids_by_name.values())
    assert sorted(s.name for s in stored.items) == sorted(ids_by_name)
