"""Searches: submit (validated up front), list, get, cancel, resume, best trial, export bundle."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy import select

from api.bundles import bundle_response
from api.deps import VALIDATION, QueuedDep, SearchId, SessionsDep, SettingsDep, WriteAuth, errors, get_or_404
from api.errors import ApiError, pydantic_fields, summarise
from api.paths import confine_corpus_root, files_outside
from api.schemas import NO_NUL, SearchCreate, SearchPage, SearchPublic, TrialDetail
from nas.data.listing import CorpusListings
from nas.errors import ConfigError, DataError, UnknownNameError
from nas.settings import Settings
from nas.spec import SpecBase, SpecFieldError, spec_from_preset
from nas.store import repository as repo
from nas.store.models import Search, SearchStatus, utcnow
from nas.store.progress import progress_of

if TYPE_CHECKING:
    from workers.ray_backend import NodeLimits

router = APIRouter(tags=["searches"], responses=VALIDATION)

# Submissions read the same few corpora again and again: each listing is read once and reused while a stat
# of its folders and label files shows no change (see nas.data.listing for what is watched).
corpus_listings = CorpusListings()

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
    request: Request,
    response: Response,
    settings: SettingsDep,
    sessions: SessionsDep,
    _auth: WriteAuth,
    queued: QueuedDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200, pattern=NO_NUL)] = None,
) -> SearchPublic:
    """Queue a search after checking everything that can be checked before it runs.

    The spec is built from the preset and overrides (or taken whole), the corpus root must lie
    inside a data root, the corpus is read (names only, no audio decoded) and must give the folds
    the spec asks for, and no task may ask one node of the connected Ray cluster for more than
    any node has; any failure is a 4xx that names the field. A retry with the same
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
    check_runnable(spec, prefix, settings, sessions)
    check_fits_cluster(spec, prefix, _known_cluster(request))
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


def build_spec(body: SearchCreate) -> tuple[SpecBase, tuple[str, ...]]:
    """The SearchSpec of a submission, and the location prefix of its fields in the request body."""
    if body.spec is not None:
        return body.spec, ("body", "spec")
    from nas.spec import STRATEGY_SPECS
    from search_spaces.presets import PRESETS, default_preset

    if body.strategy is not None and body.strategy not in STRATEGY_SPECS:
        _unknown("strategy", body.strategy, list(STRATEGY_SPECS), ["body", "strategy"])
    preset = body.preset or default_preset(body.strategy or "darts")
    if preset not in PRESETS:
        _unknown("preset", preset, list(PRESETS), ["body", "preset"])
    if body.strategy is not None and PRESETS[preset].strategy != body.strategy:
        same = sorted(p.name for p in PRESETS.values() if p.strategy == body.strategy)
        raise ApiError(
            422,
            "invalid_config",
            f"preset {preset!r} is for strategy {PRESETS[preset].strategy!r}, not "
            f"{body.strategy!r}; presets of {body.strategy!r}: {', '.join(same)}",
            [(["body", "strategy"], f"does not match preset {preset!r}")],
            valid=same,
        )
    assert body.corpus is not None  # SearchCreate guarantees corpus or spec
    fields: dict[str, Any] = {"seed": body.seed, "device": body.device, "threads": body.threads, "gpus": body.gpus}
    if body.folds is not None:
        fields["folds"] = body.folds
    try:
        return spec_from_preset(preset, body.corpus, body.overrides, **fields), ("body",)
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
    from search_spaces.presets import SECTION_NAMES

    fields: list[tuple[list[str | int], str]] = []
    for error in cause.errors():
        # Sections and specs validate through unions discriminated by strategy: loc[0] is the strategy's tag.
        loc = [str(part) for part in error["loc"][1:]]
        if not loc or loc[0] not in SECTION_NAMES:  # a shared field of the spec (device, gpus, folds, ...)
            fields.append((["body", *loc], error["msg"]))
            continue
        dotted = ".".join(loc)
        # The longest override key that the error lies under, e.g. "features.pool_to" for pool_to.1.
        keys = [k for k in overrides if dotted == k or dotted.startswith(f"{k}.")]
        fields.append((["body", "overrides", max(keys, key=len) if keys else dotted], error["msg"]))
    return fields


def _unknown(what: str, name: str, valid: Sequence[str], loc: list[str | int]) -> None:
    exc = UnknownNameError(what, name, valid)
    raise ApiError(422, "unknown_name", str(exc), [(loc, str(exc))], exc.valid)


def check_runnable(spec: SpecBase, prefix: tuple[str, ...], settings: Settings, sessions: repo.Sessions) -> None:
    """Read the corpus (no audio decoded): it must exist and lie inside the data roots; the spec must be
    able to run on it (`SpecBase.check_inputs`: its folds, an ensemble's members from earlier searches).
    The strategy's own preflight (e.g. the emoDARTS memory estimate) runs in the worker, once, against the
    device that will run the search."""
    from nas.dataset import class_names, select_utterances
    from nas.reporting import InMemoryReporter
    from nas.store.trials import StoreTrials

    corpus_loc = [*prefix, "corpus"]
    try:
        utterances, _problems = select_utterances(spec.corpus, InMemoryReporter(), corpus_listings.read)
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
    if len(class_names(utterances, spec.corpus)) < 2:
        raise ApiError(422, "invalid_data", "fewer than 2 classes left after selection", [(corpus_loc, "classes")])
    try:
        spec.check_inputs(StoreTrials(sessions), utterances)
    except ConfigError as exc:  # one without a field is about the inputs `space` names (an ensemble's)
        loc = _spec_loc(prefix, exc.field) if isinstance(exc, SpecFieldError) else [*prefix, "space"]
        raise ApiError(422, "invalid_config", str(exc), [(loc, str(exc))]) from None


def _known_cluster(request: Request) -> NodeLimits | None:
    """The Ray cluster as this controller's dispatcher last read it; None without a dispatcher
    (SERNAS_DISPATCHER=false) or before it has connected."""
    dispatcher = getattr(request.app.state, "dispatcher", None)
    return None if dispatcher is None else dispatcher.cluster


def check_fits_cluster(spec: SpecBase, prefix: tuple[str, ...], cluster: NodeLimits | None) -> None:
    """Refuse a search whose tasks ask one node for more than any node of the cluster has (Ray would keep
    them pending forever). `cluster` is None until the dispatcher has read it: its claim then judges."""
    refusals = [] if cluster is None else cluster.refusals(spec)
    if refusals:
        message = "; ".join(why for _, why in refusals)
        raise ApiError(422, "invalid_config", message, [(_spec_loc(prefix, f), why) for f, why in refusals])


def _spec_loc(prefix: tuple[str, ...], field: str) -> list[str | int]:
    """Where the spec field at dotted path `field` lies in the request: under `prefix`, or, for a section
    field of a spec built from a preset (options.trial_cpus), at its override key."""
    from search_spaces.presets import SECTION_NAMES

    if prefix == ("body",) and field.split(".")[0] in SECTION_NAMES:
        return ["body", "overrides", field]
    return [*prefix, *field.split(".")]


# ---------------------------------------------------------------- reading and control


@router.get("/searches", response_model=SearchPage)
def list_searches(
    sessions: SessionsDep,
    status: SearchStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> SearchPage:
    """Searches, newest first, optionally with one status."""
    page = repo.list_searches(sessions, status, limit, offset)
    progress = progress_of(sessions, page.items)
    items = [SearchPublic.of(s, progress[s.id]) for s in page.items]
    return SearchPage(items=items, total=page.total, limit=limit, offset=offset)


@router.get("/searches/{search_id}", response_model=SearchPublic, responses=errors(404))
def get_search(search_id: SearchId, sessions: SessionsDep) -> SearchPublic:
    """The search with its progress: trial counts, running trials and their epochs, folds, time and time left."""
    search = get_or_404(sessions, search_id)
    return SearchPublic.of(search, progress_of(sessions, [search])[search.id])


@router.post("/searches/{search_id}/cancel", response_model=SearchPublic, responses=errors(401, 403, 404, 409))
def cancel_search(search_id: SearchId, sessions: SessionsDep, _auth: WriteAuth) -> SearchPublic:
    """Cancel: a queued or waiting search at once, a running one within seconds (it can be resumed later)."""
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


@router.get("/searches/{search_id}/best", response_model=TrialDetail, responses=errors(400, 404, 409))
def best_trial(
    search_id: SearchId,
    sessions: SessionsDep,
    # The enum is documented but checked in the body: an unknown name gets a 400 that lists the valid ones.
    metric: Annotated[
        str,
        Query(
            description="the validation score that ranks the folds' models: ua or wa",
            json_schema_extra={"enum": ["ua", "wa"]},
        ),
    ] = "ua",
) -> TrialDetail:
    """The model the search chose, with its steps and genome: its final model (trained on every speaker) once
    there, until then the fold model with the best validation `metric`. Test scores never choose."""
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
            f"search {search_id} ({search.status.value}) has no model yet (the first comes when a fold ends)",
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "search"
