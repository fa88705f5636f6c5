"""What a client can choose from: search-space presets, corpus readers and data roots; and health."""

from __future__ import annotations

import functools
import inspect
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.deps import SessionsDep, SettingsDep
from api.schemas import (
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


def _list_root(root: Path) -> DataRootPublic:
    """Sub-folders and .csv files directly under a data root: one directory read, no audio decoded."""
    folders: list[str] = []
    manifests: list[str] = []
    truncated = False
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name.startswith("."):
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


@router.get("/datasets", response_model=DatasetCatalog)
def datasets(settings: SettingsDep) -> DatasetCatalog:
    """The corpus readers (`corpus.name`) with their expected layout, and what the data roots hold.

    A `corpus.root` must lie inside a data root; a relative root is looked up under each of them.
    """
    roots = [_list_root(root.expanduser()) for root in settings.data_roots]
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


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(sessions: SessionsDep, response: Response) -> Health:
    """Liveness and the database: 200 when the database answers, 503 otherwise."""
    database = await run_in_threadpool(_ping, sessions)
    if not database:
        response.status_code = 503
    return Health(status="ok" if database else "degraded", database=database, version=_package_version())
