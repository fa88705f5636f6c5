"""The study database schema: searches (which are also the work queue), trials, steps, artifacts, events.

Every timestamp is timezone-aware UTC in Python. The schema itself is created only by the Alembic
migrations in `nas/store/migrations`; a test compares the two so they cannot drift apart.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from nas.reporting import TrialState


class SearchStatus(enum.StrEnum):
    QUEUED = "queued"
    # Claimed and submitted to Ray, which has no node with the resources free now (a GPU node not joined yet,
    # every GPU busy): Ray starts it when they appear, and it holds no dispatch slot meanwhile.
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_SEARCH = (SearchStatus.COMPLETED, SearchStatus.FAILED, SearchStatus.CANCELLED)
CLAIMED_SEARCH = (SearchStatus.WAITING, SearchStatus.RUNNING)  # held under a lease by a dispatcher


class EventKind(enum.StrEnum):
    """What an event records; the live feed sends each kind as its own SSE event type."""

    LOG = "log"  # a log line of the search (the dispatcher's, the worker's, the strategy's)
    TRIAL = "trial"  # a trial started, was resumed, or finished
    EPOCH = "epoch"  # a trial reported a step (an epoch) computed now, not a resume's replay of one


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend.

    SQLite has no time zones: values are stored as naive UTC text (which also sorts correctly,
    so lease comparisons work in SQL) and read back as aware UTC. Naive input is refused rather
    than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings (the enum values) with a CHECK constraint: portable, readable in SQL,
    # and adding a state later is an ordinary migration instead of an ALTER TYPE.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    # Fixed constraint names keep migrations identical on SQLite and PostgreSQL.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute as is
        # none_as_null: a Python None is SQL NULL, not the JSON text 'null'.
        dict[str, Any]: JSON(none_as_null=True),
        datetime: UTCDateTime(),
    }


class Search(Base):
    """One search; the table doubles as the queue the dispatcher claims work from."""

    __tablename__ = "searches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: uuid.uuid4().hex)
    name: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]  # the SearchSpec JSON, exactly as submitted
    status: Mapped[SearchStatus] = mapped_column(_enum(SearchStatus, "search_status"), default=SearchStatus.QUEUED)
    # Set while running; the runner sees it through renew_lease and stops cleanly.
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)  # how many times a worker has claimed it
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None]
    result_dir: Mapped[str | None] = mapped_column(Text)
    # Client-chosen; a retried submission with the same key returns the first search.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)

    __table_args__ = (
        Index(None, "status", "created_at"),  # the queue and the filtered dashboard list
        Index(None, "created_at"),  # the unfiltered dashboard list, newest first
    )


class Trial(Base):
    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))  # the strategy's name for it; stable across resumes
    params: Mapped[dict[str, Any]]
    state: Mapped[TrialState] = mapped_column(_enum(TrialState, "trial_state"), default=TrialState.RUNNING)
    metrics: Mapped[dict[str, Any] | None]
    genome: Mapped[dict[str, Any] | None]
    # Copies of the headline metrics as real columns so the dashboard can sort and filter in SQL.
    # `n_params` is the model's parameter count (`params` already names the trial's parameters);
    # `latency_ms` copies the metric `latency_ms_p50`, the median latency of one example.
    ua: Mapped[float | None]
    wa: Mapped[float | None]
    n_params: Mapped[int | None] = mapped_column(BigInteger)
    macro_f1: Mapped[float | None]
    latency_ms: Mapped[float | None]
    fold: Mapped[int | None]
    stage: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    # lazy="raise": rows leave their session after each repository call, and an accidental
    # per-row lazy load in a 100k-trial listing should fail loudly, not go slow.
    steps: Mapped[list[TrialStep]] = relationship(order_by="TrialStep.step", lazy="raise")
    artifacts: Mapped[list[Artifact]] = relationship(order_by="Artifact.id", lazy="raise")

    __table_args__ = (
        UniqueConstraint("search_id", "key"),
        # Each listing filters by search and pages by (sort column, id): one index per sort.
        Index(None, "search_id", "id"),
        Index(None, "search_id", "state", "id"),
        Index(None, "search_id", "stage", "id"),  # trials of one stage (search / retrain), e.g. 178 -> 6 ms
        # Counts the "completed with UA >= x" filter from the index alone.
        Index(None, "search_id", "state", "ua"),
        Index(None, "search_id", "ua", "id"),
        Index(None, "search_id", "wa", "id"),
        Index(None, "search_id", "n_params", "id"),
        Index(None, "search_id", "macro_f1", "id"),
        Index(None, "search_id", "latency_ms", "id"),
        Index(None, "search_id", "fold", "id"),  # one fold's trials
    )


class TrialStep(Base):
    """One intermediate report (an epoch); keyed by (trial, step) so a re-report overwrites."""

    __tablename__ = "trial_steps"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """A file a trial (or, with no trial, the search) produced, with its checksum."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"), index=True)
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))  # None: the file was missing when recorded
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """What happened in a search, in order (live view, post-mortem); `level` is a `logging` level number.

    Every event has a readable `message`; trial and epoch events also carry `data`, written when the
    event is (the trial's key, fold, stage and state; an epoch's number and metrics), so the live feed
    reads one table and an event keeps saying what was true when it happened.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    kind: Mapped[EventKind] = mapped_column(
        _enum(EventKind, "event_kind"), default=EventKind.LOG, server_default=EventKind.LOG.value
    )
    level: Mapped[int]
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index(None, "search_id", "id"),)  # "events after id N" for the live feed
