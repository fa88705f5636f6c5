"""What a client can choose from: search-space presets, corpus readers and data roots; and health
(the database, the dispatcher and Ray)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.deps import SessionsDep, SettingsDep
from api.paths import resolve_inside
from api.schemas import (
    ComponentHealth,
    DataRootPublic,
    DatasetCatalog,
    DatasetPublic,
    Health,
    SearchSpaceCatalog,
    SearchSpacePublic,
    SectionSchemas,
    StrategyPublic,
)

router = APIRouter(tags=["catalog"])

MAX_ENTRIES = 500  # per data root in GET /datasets


@functools.cache
def _search_spaces() -> SearchSpaceCatalog:
    from nas.spec import STRATEGY_SPECS
    from search_spaces.presets import PRESETS, SECTION_NAMES

    def public(preset: Any) -> SearchSpacePublic:
        sections = preset.sections
        names = [name for name in SECTION_NAMES if name in type(sections).model_fields]
        return SearchSpacePublic(
            name=preset.name,
            strategy=preset.strategy,
            description=preset.description,
            defaults=SectionSchemas(**{name: getattr(sections, name).model_dump(mode="json") for name in names}),
            json_schema=SectionSchemas(**{name: type(getattr(sections, name)).model_json_schema() for name in names}),
        )

    return SearchSpaceCatalog(
        strategies=[
            StrategyPublic(
                name=name,
                description=inspect.cleandoc(spec_type.__doc__ or ""),
                json_schema=spec_type.model_json_schema(),
                presets=[public(p) for p in PRESETS.values() if p.strategy == name],
            )
            for name, spec_type in STRATEGY_SPECS.items()
        ]
    )


@router.get("/search-spaces", response_model=SearchSpaceCatalog)
def search_spaces() -> SearchSpaceCatalog:
    """Every strategy: the JSON Schema of its complete spec, and its presets with their default values
    and the JSON Schema of each section.

    Submit a preset by `name` with `overrides` as dotted keys into these sections,
    e.g. {"space.nodes": 2, "options.search_epochs": 5, "features.pool_to": [64, 64]}; or a complete
    `spec` (its `strategy` field picks the schema).
    """
    return _search_spaces()


@functools.cache
def _corpora() -> list[DatasetPublic]:
    from nas.data.corpora import corpus_names, get_reader

    corpora = []
    for name in corpus_names():
        reader = get_reader(name)
        corpora.append(
            DatasetPublic(
                name=name,
                layout=reader.layout,
                root_is_file=reader.root_is_file,
                description=inspect.cleandoc(type(reader).__doc__ or ""),
            )
        )
    return corpora


def _list_root(root: Path, data_roots: Sequence[Path]) -> DataRootPublic:
    """Sub-folders and .csv files directly under a data root: one directory read, no audio decoded.

    A symlink that leads outside the data roots is left out: a corpus there would be refused (403).
    """
    folders: list[str] = []
    manifests: list[str] = []
    truncated = False
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name.startswith(".") or _escapes(entry, data_roots):
                    continue
                if len(folders) + len(manifests) >= MAX_ENTRIES:
                    truncated = True
                    break
                if entry.is_dir():
                    folders.append(entry.name)
                elif entry.name.lower().endswith(".csv") and entry.is_file():
                    manifests.append(entry.name)
        exists = True
    except OSError:
        exists = False
    return DataRootPublic(
        path=str(root),
        exists=exists,
        folders=sorted(folders),
        manifests=sorted(manifests),
        truncated=truncated,
    )


def _escapes(entry: os.DirEntry[str], data_roots: Sequence[Path]) -> bool:
    return entry.is_symlink() and resolve_inside(Path(entry.path), data_roots) is None


@router.get("/datasets", response_model=DatasetCatalog)
def datasets(settings: SettingsDep) -> DatasetCatalog:
    """The corpus readers (`corpus.name`) with their expected layout, and what the data roots hold.

    A `corpus.root` must lie inside a data root; a relative root is looked up under each of them.
    """
    roots = [_list_root(root.expanduser(), settings.data_roots) for root in settings.data_roots]
    return DatasetCatalog(corpora=_corpora(), data_roots=roots)


def _package_version() -> str:
    try:
        return version("sernas")
    except PackageNotFoundError:
        return "0+unknown"


def _ping(sessions: SessionsDep) -> bool:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


RAY_PROBE_SECONDS = 5.0  # a Ray that takes longer to say what it has is reported as not answering
_NO_DISPATCHER = "no dispatcher in this process (SERNAS_DISPATCHER=false, or the API served alone)"


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request, sessions: SessionsDep, response: Response) -> Health:
    """The database, the dispatcher and Ray: `status` is "ok" when each is ok (or disabled here),
    "degraded" otherwise, with what is wrong in the component's `detail`.

    503 when the database does not answer (this controller can serve nothing); 200 otherwise, also
    when degraded: reads and submissions still work, and queued searches wait for Ray to come back.
    """
    database = await run_in_threadpool(_ping, sessions)
    dispatcher = getattr(request.app.state, "dispatcher", None)
    dispatching = _dispatcher_health(dispatcher)
    ray = await _ray_health(request, dispatcher)
    healthy = database and all(c.status in ("ok", "disabled") for c in (dispatching, ray))
    if not database:
        response.status_code = 503
    return Health(
        status="ok" if healthy else "degraded",
        database=database,
        dispatcher=dispatching,
        ray=ray,
        version=_package_version(),
    )


def _dispatcher_health(dispatcher: Any) -> ComponentHealth:
    """From the state the dispatcher keeps: `connected` once Ray answered, `error` while it fails."""
    if dispatcher is None:
        return ComponentHealth(status="disabled", detail=f"{_NO_DISPATCHER}: queued searches wait for another one")
    if dispatcher.error:
        return ComponentHealth(status="error", detail=dispatcher.error)
    if not dispatcher.connected.is_set():
        return ComponentHealth(status="starting", detail="connecting to Ray")
    running, limit = len(dispatcher.tasks), dispatcher.settings.max_running
    return ComponentHealth(status="ok", detail=f"{running} of at most {limit} searches running")


async def _ray_health(request: Request, dispatcher: Any) -> ComponentHealth:
    """Asks Ray itself once the dispatcher is connected: a cluster that went away while no search
    ran would otherwise go unnoticed until the next submission."""
    if dispatcher is None:
        return ComponentHealth(status="disabled", detail=_NO_DISPATCHER)
    if not dispatcher.connected.is_set():
        if dispatcher.error:
            return ComponentHealth(status="error", detail=dispatcher.error)
        return ComponentHealth(status="starting", detail="the dispatcher is connecting to it")
    from workers.ray_backend import RayBackend

    backend = dispatcher.backend
    if not isinstance(backend, RayBackend):
        return ComponentHealth(status="disabled", detail=f"the dispatcher runs searches on {type(backend).__name__}")
    where = "the local Ray" if backend.embedded else f"the Ray cluster at {backend.address}"
    try:
        resources = await _ray_probe(request).resources(RAY_PROBE_SECONDS)
    except TimeoutError:
        return ComponentHealth(status="error", detail=f"{where} did not answer within {RAY_PROBE_SECONDS:g} s")
    except Exception as exc:
        return ComponentHealth(status="error", detail=f"{where} did not answer: {type(exc).__name__}: {exc}")
    return ComponentHealth(status="ok", detail=f"{where}: {resources}")


def cluster_resources() -> str:
    """What the connected Ray cluster has, e.g. "CPU 16, GPU 2" (a call to Ray's GCS; may block)."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("this process is not connected to Ray")
    resources = ray.cluster_resources()
    return ", ".join(f"{name} {resources.get(name, 0):g}" for name in ("CPU", "GPU"))


class RayProbe:
    """Runs `cluster_resources` in a worker thread, one call at a time: health checks that come while
    one is unanswered wait for that same answer, so a hung Ray holds one thread, not one per check."""

    def __init__(self) -> None:
        self._pending: asyncio.Future[str] | None = None

    async def resources(self, timeout: float) -> str:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(run_in_threadpool(cluster_resources))
            # Read a late failure that no caller waits for any more, so asyncio does not log it as lost.
            self._pending.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.wait_for(asyncio.shield(self._pending), timeout)


def _ray_probe(request: Request) -> RayProbe:
    state = request.app.state
    if getattr(state, "ray_probe", None) is None:
        state.ray_probe = RayProbe()
    return state.ray_probe
