"""Searches: submit (validated up front), list, get, cancel, resume, best trial, export bundle."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.background import BackgroundTask

from api.deps import QueuedDep, SessionsDep, SettingsDep, WriteAuth
from api.errors import ApiError, pydantic_fields, summarise
from api.schemas import NO_NUL, ErrorBody, SearchCreate, SearchPage, SearchPublic, TrialDetail
from nas.errors import ConfigError, DataError, SernasError, UnknownNameError
from nas.settings import Settings
from nas.spec import SearchSpec
from nas.store import repository as repo
from nas.store.models import Search, SearchStatus, utcnow

# FastAPI would document its own 422 body; ours is ErrorBody like every other error.
VALIDATION: dict[int | str, dict[str, Any]] = {422: {"model": ErrorBody, "description": "invalid request"}}
router = APIRouter(tags=["searches"], responses=VALIDATION)

SearchId = Annotated[
    str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="a search id")
]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route may return."""
    return {code: {"model": ErrorBody} for code in codes}


# ---------------------------------------------------------------- submission


@router.post(
    "/searches",
    status_code=201,
    response_model=SearchPublic,
    responses={
        200: {"model": SearchPublic, "description": "an idempotent retry"},
        **errors(401, 403, 409, 413),
    },
)
def submit_search(
    body: SearchCreate,
    response: Response,
    settings: SettingsDep,
    sessions: SessionsDep,
    _auth: WriteAuth,
    queued: QueuedDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200, pattern=NO_NUL)] = None,
) -> SearchPublic:
    """Queue a search after checking everything that can be checked before it runs.

    The spec is built from the preset and overrides (or taken whole), the corpus root must lie
    inside a data root, the corpus is read (names only, no audio decoded), and the strategy's
    memory estimate must fit; any failure is a 4xx that names the field. A retry with the same
    idempotency key (body field or `Idempotency-Key` header) returns the first search with 200.
    """
    key = _idempotency_key(body.idempotency_key, idempotency_key)
    spec, prefix = build_spec(body)
    spec = spec.model_copy(
        update={"corpus": spec.corpus.model_copy(update={"root": confine_corpus_root(spec, prefix, settings)})}
    )
    spec_json = spec.model_dump(mode="json")
    if key is not None and _key_used(sessions, key):
        # Already submitted (and checked then): only the identity of the submission is compared.
        response.status_code = 200
        return SearchPublic.of(repo.create_search(sessions, spec_json, body.name, spec.strategy, key))
    check_runnable(spec, prefix, settings)
    submitted = utcnow()
    search = repo.create_search(sessions, spec_json, body.name, spec.strategy, key)
    if search.created_at < submitted:  # a concurrent request with the same key got there first
        response.status_code = 200
    else:
        response.headers["Location"] = f"/searches/{search.id}"
        queued(search.id)
    return SearchPublic.of(search)


def _idempotency_key(in_body: str | None, in_header: str | None) -> str | None:
    if in_body is not None and in_header is not None and in_body != in_header:
        raise ApiError(
            422,
            "validation_error",
            "the Idempotency-Key header and the body's idempotency_key differ; send one, or the same",
            [(["header", "idempotency-key"], "differs from body.idempotency_key")],
        )
    return in_body if in_body is not None else in_header


def _key_used(sessions: SessionsDep, key: str) -> bool:
    with sessions() as session:
        return session.scalar(select(Search.id).where(Search.idempotency_key == key)) is not None


def build_spec(body: SearchCreate) -> tuple[SearchSpec, tuple[str, ...]]:
    """The SearchSpec of a submission, and the location prefix of its fields in the request body."""
    if body.spec is not None:
        return body.spec, ("body", "spec")
    from nas.strategies import strategy_names
    from search_spaces.presets import PRESETS

    if body.preset not in PRESETS:
        _unknown("preset", body.preset, list(PRESETS), ["body", "preset"])
    if body.strategy is not None:
        if body.strategy not in strategy_names():
            _unknown("strategy", body.strategy, strategy_names(), ["body", "strategy"])
        if PRESETS[body.preset].strategy != body.strategy:
            same = sorted(p.name for p in PRESETS.values() if p.strategy == body.strategy)
            raise ApiError(
                422,
                "invalid_config",
                f"preset {body.preset!r} is for strategy {PRESETS[body.preset].strategy!r}, not "
                f"{body.strategy!r}; presets of {body.strategy!r}: {', '.join(same)}",
                [(["body", "strategy"], f"does not match preset {body.preset!r}")],
                valid=same,
            )
    assert body.corpus is not None  # SearchCreate guarantees corpus or spec
    fields: dict[str, Any] = {"seed": body.seed, "device": body.device, "gpus": body.gpus}
    if body.folds is not None:
        fields["folds"] = body.folds
    try:
        return SearchSpec.from_preset(body.preset, body.corpus, body.overrides, **fields), ("body",)
    except UnknownNameError as exc:  # not the preset (checked above): a name inside it
        raise ApiError(422, "unknown_name", str(exc), [(["body", "overrides"], str(exc))], exc.valid) from None
    except ConfigError as exc:
        raise ApiError(422, "invalid_config", str(exc), _override_fields(exc, body.overrides)) from None
    except ValidationError as exc:
        located = pydantic_fields(exc, ("body",))
        raise ApiError(422, "validation_error", summarise(located), located) from None


def _override_fields(exc: ConfigError, overrides: dict[str, Any]) -> list[tuple[list[str | int], str]]:
    """Point an override error at the dotted key that caused it."""
    cause = exc.__cause__
    if not isinstance(cause, ValidationError):
        bad = [k for k in overrides if repr(k) in str(exc)]
        return [(["body", "overrides", *bad[:1]], str(exc))]
    fields: list[tuple[list[str | int], str]] = []
    for error in cause.errors():
        loc = [str(part) for part in error["loc"]]
        dotted = ".".join(loc)
        # The longest override key that the error lies under, e.g. "features.pool_to" for pool_to.1.
        keys = [k for k in overrides if dotted == k or dotted.startswith(f"{k}.")]
        fields.append((["body", "overrides", max(keys, key=len) if keys else dotted], error["msg"]))
    return fields


def _unknown(what: str, name: str, valid: Sequence[str], loc: list[str | int]) -> None:
    exc = UnknownNameError(what, name, valid)
    raise ApiError(422, "unknown_name", str(exc), [(loc, str(exc))], exc.valid)


def resolve_inside(path: Path, roots: Sequence[Path]) -> Path | None:
    """`path` with symlinks and `..` resolved, if it lies inside one of `roots` (also resolved)."""
    try:
        resolved = Path(os.path.realpath(path))
        allowed = [Path(os.path.realpath(root.expanduser())) for root in roots]
    except (OSError, ValueError):  # e.g. an embedded NUL byte
        return None
    return resolved if any(resolved.is_relative_to(root) for root in allowed) else None


def files_outside(paths: Sequence[Path], roots: Sequence[Path]) -> list[Path]:
    """The files of `paths` that lie outside `roots` once resolved.

    Resolves each folder once and a file only when it is itself a symlink: one lstat per file
    instead of a realpath walk, so checking a 10,000-file corpus stays cheap.
    """
    folder_inside: dict[str, bool] = {}
    outside = []
    for path in paths:
        name = os.path.abspath(path)
        folder = os.path.dirname(name)
        inside = folder_inside.get(folder)
        if inside is None:
            inside = folder_inside[folder] = resolve_inside(Path(folder), roots) is not None
        if inside and os.path.islink(name):
            inside = resolve_inside(Path(name), roots) is not None
        if not inside:
            outside.append(path)
    return outside


def confine_corpus_root(spec: SearchSpec, prefix: tuple[str, ...], settings: Settings) -> Path:
    """The corpus root, resolved, if it lies inside a data root (a relative root is looked up in each)."""
    root, roots = spec.corpus.root, settings.data_roots
    loc = [*prefix, "corpus", "root"]
    if "\x00" in str(root):
        raise ApiError(422, "validation_error", "corpus.root contains a NUL byte", [(loc, "NUL byte")])
    candidates = [root] if root.is_absolute() else [r.expanduser() / root for r in roots]
    # A relative root names a folder under a data root: the first data root that holds it wins.
    chosen = next((c for c in candidates if _exists(c)), candidates[0] if candidates else root)
    resolved = resolve_inside(chosen, roots)
    if resolved is None:
        allowed = ", ".join(str(r) for r in roots) or "(none configured)"
        message = (
            f"corpus.root {str(root)[:300]!r} lies outside the data roots this server may read "
            f"(after resolving symlinks and '..'); allowed: {allowed} (set SERNAS_DATA_ROOTS)"
        )
        raise ApiError(403, "forbidden_path", message, [(loc, "outside the data roots")])
    return resolved


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        return False


def check_runnable(spec: SearchSpec, prefix: tuple[str, ...], settings: Settings) -> None:
    """Read the corpus (no audio decoded) and run the strategy's preflight (memory estimate).

    Blocking, and slow for a search shape not estimated lately (see `preflight`): call it from a
    worker thread.
    """
    from nas.dataset import class_names, select_utterances
    from nas.reporting import InMemoryReporter

    corpus_loc = [*prefix, "corpus"]
    try:
        utterances, _problems = select_utterances(spec.corpus, InMemoryReporter())
    except UnknownNameError as exc:
        raise ApiError(422, "unknown_name", str(exc), [([*corpus_loc, "name"], str(exc))], exc.valid) from None
    except DataError as exc:
        raise ApiError(422, "invalid_data", str(exc), [(corpus_loc, str(exc))]) from None
    except (OSError, ValueError) as exc:  # e.g. a label file that is not text
        message = f"cannot read the corpus at {spec.corpus.root}: {getattr(exc, 'strerror', None) or exc}"
        raise ApiError(422, "invalid_data", message, [([*corpus_loc, "root"], message)]) from None
    # A manifest (or a symlink inside a corpus) may point anywhere: every file must be readable to us.
    outside = files_outside([u.path for u in utterances], settings.data_roots)
    if outside:
        message = (
            f"{len(outside)} of the corpus's {len(utterances)} files lie outside the data roots "
            f"(e.g. {outside[0]}); allowed: {', '.join(str(r) for r in settings.data_roots)}"
        )
        raise ApiError(403, "forbidden_path", message, [([*corpus_loc, "root"], "files outside the data roots")])
    preflight(spec, len(class_names(utterances, spec.corpus)))


# ---------------------------------------------------------------- the memory estimate, shared

PREFLIGHT_TTL_SECONDS = 300.0
PREFLIGHT_CACHE_SIZE = 256
_outcomes: dict[str, tuple[float, str | None]] = {}  # key -> (when, refusal message or None)
_key_locks: dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()
# One estimate at a time: the darts preflight builds the supernet and runs it forward (seconds of
# CPU and up to several GB at the paper's size); N concurrent submissions must not build N of them.
_computing = threading.Lock()


def preflight(spec: SearchSpec, n_classes: int) -> None:
    """The strategy's preflight (memory estimate), run once per search shape and remembered a while.

    Its outcome depends on the space, features, options and class count (not on the corpus, seed
    or folds), and, for the default limit, on the memory free now: it is cached for
    PREFLIGHT_TTL_SECONDS. Concurrent submissions of one shape wait for a single estimate. The
    worker runs the same preflight again right before the search starts, so a stale "fits"
    costs nothing but an early refusal missed.
    """
    from nas.errors import ResourceError
    from nas.strategies import get_strategy

    sections = [spec.space, spec.features, spec.options]
    key = json.dumps([spec.strategy, n_classes, *(m.model_dump(mode="json") for m in sections)])
    outcome = _fresh(key)
    if outcome is None:
        with _key_locks_guard:
            lock = _key_locks.setdefault(key, threading.Lock())
        with lock:
            outcome = _fresh(key)
            if outcome is None:
                strategy = get_strategy(spec.strategy)  # imports torch the first time
                with _computing:
                    try:
                        strategy.preflight(spec, n_classes)
                        refusal = None
                    except ResourceError as exc:
                        refusal = str(exc)
                outcome = (time.monotonic(), refusal)
                _remember(key, outcome)
    if outcome[1] is not None:
        raise ResourceError(outcome[1])


def _fresh(key: str) -> tuple[float, str | None] | None:
    outcome = _outcomes.get(key)
    if outcome is None or time.monotonic() - outcome[0] > PREFLIGHT_TTL_SECONDS:
        return None
    return outcome


def _remember(key: str, outcome: tuple[float, str | None]) -> None:
    with _key_locks_guard:
        _outcomes[key] = outcome
        while len(_outcomes) > PREFLIGHT_CACHE_SIZE:
            oldest = min(_outcomes, key=lambda k: _outcomes[k][0])
            del _outcomes[oldest]
            _key_locks.pop(oldest, None)


# ---------------------------------------------------------------- reading and control


def get_or_404(sessions: SessionsDep, search_id: str) -> Search:
    search = repo.get_search(sessions, search_id)
    if search is None:
        raise ApiError(404, "not_found", f"no search with id {search_id!r}")
    return search


@router.get("/searches", response_model=SearchPage)
def list_searches(
    sessions: SessionsDep,
    status: SearchStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> SearchPage:
    """Searches, newest first, optionally with one status."""
    page = repo.list_searches(sessions, status, limit, offset)
    return SearchPage(items=[SearchPublic.of(s) for s in page.items], total=page.total, limit=limit, offset=offset)


@router.get("/searches/{search_id}", response_model=SearchPublic, responses=errors(404))
def get_search(search_id: SearchId, sessions: SessionsDep) -> SearchPublic:
    return SearchPublic.of(get_or_404(sessions, search_id))


@router.post("/searches/{search_id}/cancel", response_model=SearchPublic, responses=errors(401, 403, 404, 409))
def cancel_search(search_id: SearchId, sessions: SessionsDep, _auth: WriteAuth) -> SearchPublic:
    """Cancel: a queued search at once, a running one within seconds (it can be resumed later)."""
    search = repo.request_cancel(sessions, search_id)
    if search.status in (SearchStatus.COMPLETED, SearchStatus.FAILED):
        raise ApiError(409, "invalid_transition", f"search {search_id} is {search.status.value}; nothing to cancel")
    return SearchPublic.of(search)


@router.post("/searches/{search_id}/resume", response_model=SearchPublic, responses=errors(401, 403, 404, 409))
def resume_search(search_id: SearchId, sessions: SessionsDep, _auth: WriteAuth, queued: QueuedDep) -> SearchPublic:
    """Queue a failed or cancelled search again; it continues from its checkpoints and finished trials."""
    search = repo.resume(sessions, search_id)
    if search.status == SearchStatus.QUEUED:
        queued(search.id)
    return SearchPublic.of(search)


@router.get("/searches/{search_id}/best", response_model=TrialDetail, responses=errors(404, 409))
def best_trial(
    search_id: SearchId,
    sessions: SessionsDep,
    metric: Annotated[str, Query(description="ua or wa")] = "ua",
) -> TrialDetail:
    """The completed trial with the highest `metric`, with its steps and genome."""
    if metric not in ("ua", "wa"):
        exc = UnknownNameError("metric", metric, ["ua", "wa"])
        raise ApiError(400, "unknown_name", str(exc), [(["query", "metric"], str(exc))], exc.valid)
    search = get_or_404(sessions, search_id)
    best = repo.best_trial(sessions, search_id, metric)
    trial = None if best is None else repo.get_trial(sessions, best.id)
    if trial is None:
        raise ApiError(
            409,
            "no_result",
            f"search {search_id} ({search.status.value}) has no completed trial with a {metric} yet",
        )
    return TrialDetail.of(trial)


# ---------------------------------------------------------------- export


@router.get(
    "/searches/{search_id}/export",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "the bundle"},
        **errors(403, 404, 409),
    },
)
def export_search(search_id: SearchId, sessions: SessionsDep, settings: SettingsDep) -> FileResponse:
    """The search's best model as one zip: genome.json, weights.safetensors, metrics.json, MODEL_CARD.md."""
    search = get_or_404(sessions, search_id)
    folder = Path(search.result_dir) if search.result_dir else settings.results_dir / search.id
    if search.status != SearchStatus.COMPLETED:
        raise ApiError(409, "no_result", f"search {search_id} is {search.status.value}; it has no result yet")
    return bundle_response(folder, settings, f"sernas-{_slug(search.name)}-{search.id[:8]}.zip")


def bundle_response(folder: Path, settings: Settings, download_name: str) -> FileResponse:
    """Zip a result folder (which must lie inside the results directory) into a temporary download."""
    from nas.bundle import export_bundle

    inside = resolve_inside(folder, [settings.results_dir])
    if inside is None:
        raise ApiError(403, "forbidden_path", "the recorded result folder lies outside the results directory")
    if not _has_model(inside):
        raise ApiError(409, "no_result", "the result folder holds no model (genome.json and weights) yet")
    workdir = Path(tempfile.mkdtemp(prefix="sernas-export-"))
    try:
        bundle = export_bundle(inside, workdir / "bundle.zip")
    except (OSError, ValueError, SernasError) as exc:  # a corrupt or vanishing result
        shutil.rmtree(workdir, ignore_errors=True)
        raise ApiError(409, "no_result", f"the result folder cannot be exported: {exc}") from None
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return FileResponse(
        bundle,
        media_type="application/zip",
        filename=download_name,
        background=BackgroundTask(shutil.rmtree, workdir, ignore_errors=True),
    )


def _has_model(folder: Path) -> bool:
    return (folder / "genome.json").is_file() and (folder / "weights.safetensors").is_file()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "search"
