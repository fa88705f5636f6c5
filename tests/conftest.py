"""Shared fixtures: the real RAVDESS data, and a fresh study database per test on SQLite and PostgreSQL.

PostgreSQL comes from SERNAS_TEST_POSTGRES_URL (a server the test user may create schemas on,
e.g. postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres). Without it, a throwaway
cluster is started from the local server binaries (initdb/pg_ctl; unix socket only, no TCP) for
the session. Each test gets its own schema. If PostgreSQL is unavailable, the postgresql variants
fail when CI=true and are skipped otherwise.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from nas.store.db import make_engine, migrate, session_factory

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ravdess_root() -> Path:
    """The real RAVDESS subset shipped beside the repository (never copied into it)."""
    root = Path(os.environ.get("SERNAS_RAVDESS", REPO.parent / "shared" / "data" / "ravdess"))
    if not (root / "Actor_01").is_dir():
        pytest.fail(f"RAVDESS test data not found at {root}; set SERNAS_RAVDESS to its folder")
    return root


BACKENDS = ("sqlite", "postgresql")


class PostgresUnavailableError(RuntimeError):
    pass


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL database the tests may create schemas in."""
    url = os.environ.get("SERNAS_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    try:
        cluster = _start_cluster()
    except PostgresUnavailableError as exc:
        message = f"PostgreSQL unavailable: {exc}. Set SERNAS_TEST_POSTGRES_URL or install the server."
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@contextmanager
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of `backend` for one test; yields its URL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'sernas.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(server)
    try:
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        # Every connection of the test sees only its own schema.
        url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database; the test is run once per backend."""
    with database(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


# ---------------------------------------------------------------- a throwaway PostgreSQL cluster


class _Cluster:
    def __init__(self, bindir: Path, root: Path, run_as: list[str]) -> None:
        self.bindir, self.root, self.run_as = bindir, root, run_as
        self.data = root / "data"
        # The socket directory is private to this cluster, so the default port cannot collide.
        self.url = f"postgresql+psycopg://postgres@/postgres?host={root}&port=5432"

    def run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.run_as, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            raise PostgresUnavailableError(f"{tool} failed: {done.stderr.strip()} {detail}".strip())

    def stop(self) -> None:
        try:
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _start_cluster() -> _Cluster:
    bindir = _server_bindir()
    run_as: list[str] = []
    # A short path: a unix socket path must stay under ~100 bytes.
    root = Path(tempfile.mkdtemp(prefix="sernas-pg-", dir="/tmp"))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            raise PostgresUnavailableError("running as root and there is no 'postgres' user") from None
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    cluster = _Cluster(bindir, root, run_as)
    try:
        cluster.run("initdb", "-D", str(cluster.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        # Durability is irrelevant for a throwaway test server; speed is not.
        options = f"-k {root} -c listen_addresses='' -p 5432 -F -c full_page_writes=off -c max_connections=200"
        cluster.run("pg_ctl", "-D", str(cluster.data), "-l", str(root / "server.log"), "-o", options, "-w", "start")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


def _server_bindir() -> Path:
    candidates = [os.environ.get("SERNAS_TEST_POSTGRES_BIN", "")]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    # Debian/Ubuntu keep the server binaries off PATH; take the newest version installed.
    installed = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(installed, key=lambda p: [int(n) for n in Path(p).parent.name.split(".") if n.isdigit()])[::-1]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresUnavailableError("no PostgreSQL server binaries (initdb, pg_ctl) found")


def link_actors(root: Path, ravdess_root: Path, actors: Iterable[int]) -> Path:
    """A RAVDESS-layout folder at `root` of links to the real recordings of `actors` (never copies)."""
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for src in (ravdess_root / folder.name).glob("*.flac"):
            (folder / src.name).symlink_to(src)
    return root
