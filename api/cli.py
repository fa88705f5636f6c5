"""The service commands of `sernas`: serve, submit, status, download, worker.

`nas.cli` adds them to its parser through the `sernas.commands` entry point (pyproject.toml), which
names `add_commands(subparsers)`. `serve` runs the controller with the
dispatcher and a local Ray; `submit`, `status` and `download` talk to a running controller over
HTTP (SERNAS_URL, default http://127.0.0.1:8000; SERNAS_API_TOKEN for writes); `worker` joins
this machine to a Ray cluster so the searches that reserve GPUs can run on it.

Also runnable without the console script: `python -m api.cli serve ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nas.cli import add_spec_arguments, overrides, pairs
from nas.errors import ConfigError, SernasError

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = ("completed", "failed", "cancelled")

# `serve --example`: a small emoDARTS search (calm vs angry, 8 actors, fold 0 of 4 speaker folds, 2
# search epochs) that runs the whole protocol in about 5 minutes on 2 CPU cores. The retraining
# keeps the preset's 30 epochs with patience 10: with fewer, this tiny split can stop before the
# model leaves chance level.
EXAMPLE_DATA = Path("../shared/data/ravdess")
EXAMPLE_ACTORS = tuple(f"Actor_{i:02d}" for i in range(1, 9))
EXAMPLE_OVERRIDES = {
    "options.search_epochs": 2,
    "options.train_epochs": 30,
    "options.patience": 10,
    "options.search_fraction": 0.5,
}

WORKER_HELP = """\
Join this machine to a Ray cluster as a worker node, so the searches that reserve GPUs
(`gpus` in the spec, `--gpus` of `sernas submit`) run here. It prints and runs:

    ray start --address HOST:PORT --num-gpus N --block

HOST:PORT is the Ray head's GCS address (port 6379 by default). Start the head on one machine with
`ray start --head --port 6379` and point the controller at it (SERNAS_RAY_ADDRESS=HOST:6379 sernas
serve); then run `sernas worker --address HOST:6379 --num-gpus 1` on each GPU node. Ray reserves
the GPUs per search and sets CUDA_VISIBLE_DEVICES in the search's process. Every node needs this
package installed (same Python and Ray versions), the study database reachable at the controller's
SERNAS_DATABASE_URL (PostgreSQL for several nodes), and the data and SERNAS_DATA_DIR folders at
the same paths (shared storage). If the cluster uses token authentication (RAY_AUTH_MODE=token),
export the cluster's RAY_AUTH_TOKEN first.
"""


def add_commands(subparsers: Any) -> None:
    """Add serve, submit, status, download and worker to the `sernas` command parser."""
    serve = subparsers.add_parser(
        "serve",
        help="run the REST controller with the dispatcher and a local Ray",
        description="Run the REST controller (OpenAPI at /docs) with the dispatcher and, unless "
        "SERNAS_RAY_ADDRESS or RAY_ADDRESS names a cluster, a local Ray. Settings come from "
        "SERNAS_* variables (see nas.settings): data dir, database URL, data roots, API token.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--example",
        action="store_true",
        help="once up, submit a small example search on --example-data and print where to watch it",
    )
    serve.add_argument(
        "--example-data",
        type=Path,
        default=EXAMPLE_DATA,
        help=f"RAVDESS folder of the example (default {EXAMPLE_DATA}); added to the data roots",
    )
    serve.add_argument("--no-dispatcher", action="store_true", help="only serve the API; another process runs searches")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=serve_command)

    submit = subparsers.add_parser(
        "submit", help="submit a search to a running controller", description=_submit_description()
    )
    _client_options(submit)
    submit.add_argument("--name", default=None, help="a label for the search (default: corpus and preset)")
    submit.add_argument("--spec", type=Path, default=None, help="a complete SearchSpec JSON file instead")
    add_spec_arguments(
        submit, required=False, data_help="corpus folder (the manifest for csv); relative: under a data root"
    )
    submit.add_argument("--gpus", type=float, default=0, help="GPUs Ray reserves for the search")
    submit.add_argument("--idempotency-key", default=None, help="a retry with the same key submits once")
    submit.add_argument("--wait", action="store_true", help="follow the search until it finishes")
    submit.set_defaults(run=submit_command)

    status = subparsers.add_parser("status", help="show searches (or one search) of a running controller")
    _client_options(status)
    status.add_argument("search_id", nargs="?", help="a search id (default: list the latest searches)")
    status.add_argument("--watch", action="store_true", help="follow the search until it finishes")
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.set_defaults(run=status_command)

    download = subparsers.add_parser(
        "download", help="download a completed search's model bundle (zip) from a running controller"
    )
    _client_options(download)
    download.add_argument("search_id")
    download.add_argument("--to", type=Path, default=None, help="zip path (default sernas-<id>.zip)")
    download.set_defaults(run=download_command)

    worker = subparsers.add_parser(
        "worker",
        help="join this machine to a Ray cluster as a (GPU) worker node",
        description=WORKER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument(
        "--address",
        default=os.environ.get("SERNAS_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS"),
        help="the Ray head, HOST:PORT (default SERNAS_RAY_ADDRESS or RAY_ADDRESS)",
    )
    worker.add_argument("--num-gpus", type=int, default=None, help="GPUs this node offers (default: all)")
    worker.add_argument("--num-cpus", type=int, default=None, help="CPUs this node offers (default: all)")
    worker.add_argument("--dry-run", action="store_true", help="only print the command")
    worker.set_defaults(run=worker_command)


def _submit_description() -> str:
    return (
        "Submit a search to a running controller (`sernas serve`): the same options as `sernas search`, "
        "checked by the server before it is queued. The corpus path is sent as an absolute path when "
        "it exists here, so it must be readable by the service and lie under its data roots "
        "(SERNAS_DATA_ROOTS). Prints the search id and where to follow it; --wait follows it."
    )


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("SERNAS_URL", DEFAULT_URL),
        help=f"the controller (default SERNAS_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", default=os.environ.get("SERNAS_API_TOKEN"), help="write token (default SERNAS_API_TOKEN)"
    )


# ---------------------------------------------------------------- serve


def serve_command(args: argparse.Namespace) -> int:
    quiet_startup()  # first: importing the service imports Alembic, which logs as it loads its plugins
    import uvicorn

    from api.service import StoppingServer, create_service
    from nas.settings import Settings

    settings = Settings()
    if args.no_dispatcher:
        settings = settings.model_copy(update={"dispatcher": False})
    example_root = None
    if args.example:
        example_root = args.example_data.expanduser().resolve()
        if not (example_root / "Actor_01").is_dir():
            raise ConfigError(f"no RAVDESS data at {example_root} for --example; pass --example-data <RAVDESS folder>")
        if not any(_inside(example_root, root) for root in settings.data_roots):
            settings = settings.model_copy(update={"data_roots": [*settings.data_roots, example_root]})
    app = create_service(settings)
    server = StoppingServer(
        uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False),
        app.state.stopping,
    )
    base = f"http://{_display_host(args.host)}:{args.port}"
    # Flushed: when stdout is a pipe or a file (a service manager's log), it would wait in the buffer.
    print(f"sernas: serving on {base} (API docs at {base}/docs); data in {settings.data_dir.resolve()}", flush=True)
    if example_root is not None:
        threading.Thread(target=_submit_example, args=(server, base, settings, example_root), daemon=True).start()
    # uvicorn stops gracefully on SIGINT and SIGTERM alike (the dispatcher stops and Ray with it; a running
    # search keeps its checkpoint and lease, and resumes on the next start), then raises the signal again
    # with the handlers it found. These make that the normal end of the command, exit status 0, instead of
    # a KeyboardInterrupt or death by SIGTERM (status 143).
    previous = {sig: signal.signal(sig, _stop_requested) for sig in STOP_SIGNALS}
    try:
        server.run()
    except StopRequestedError as stop:
        print(f"sernas: stopped by {stop}; a running search resumes from its checkpoint on the next start", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequestedError(Exception):
    """SIGINT or SIGTERM reached `sernas serve` (after uvicorn's graceful shutdown, or before it started)."""


def _stop_requested(signum: int, _frame: object) -> None:
    raise StopRequestedError(signal.Signals(signum).name)


def quiet_startup() -> None:
    """Keep what `sernas serve` prints to what a person needs: where it serves, Ray, problems.

    - Alembic logs its plugins and migration context at INFO on every start.
    - A local Ray warns at every start that it enabled token authentication (nothing to do about it:
      it binds loopback and its workers get the token); a cluster's own settings are not touched.
    - Ray's native failure-signal handler prints a stack dump on SIGTERM, which is how a service manager
      stops a service and which uvicorn handles as a graceful stop: the dump reads like a crash. The
      variable is read when Ray is imported, here and in the local Ray's workers (which Ray also stops
      with SIGTERM); set RAY_DISABLE_FAILURE_SIGNAL_HANDLER=0 to keep the dumps.
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def _inside(path: Path, root: Path) -> bool:
    return path.is_relative_to(root.expanduser().resolve())


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host


def example_body(root: Path) -> dict[str, Any]:
    """The example search `serve --example` submits (idempotent: submitting it again changes nothing)."""
    return {
        "name": "example: emoDARTS demo on RAVDESS (calm vs angry, 8 actors, 1 fold)",
        "preset": "emodarts-demo",
        "corpus": {
            "name": "ravdess",
            "root": str(root),
            "classes": ["calm", "angry"],
            "speakers": list(EXAMPLE_ACTORS),
        },
        "overrides": EXAMPLE_OVERRIDES,
        "folds": {"n_folds": 4, "only": [0]},
        "idempotency_key": f"sernas-example-1-{root}",
    }


def _submit_example(server: Any, base: str, settings: Any, root: Path) -> None:
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or server.should_exit:
            return
        time.sleep(0.1)
    try:
        client = Client(base, settings.api_token.get_secret_value() if settings.api_token else None)
        search = client.post("/searches", example_body(root))
    except SernasError as exc:
        print(f"sernas: could not submit the example search: {exc}", file=sys.stderr, flush=True)
        return
    url = f"{base}/searches/{search['id']}"
    print(
        f"\nsernas: example search {search['id']} is {search['status']} "
        f"(RAVDESS at {root}: calm vs angry, 8 actors, fold 0 of 4; about 5 minutes on 2 CPUs).\n"
        f"  watch it:     sernas status {search['id']} --watch --url {base}\n"
        f"  its state:    {url}\n"
        f"  its trials:   {url}/trials\n"
        f"  live events:  {url}/events\n"
        f"  API docs:     {base}/docs\n"
        f"  when done:    sernas download {search['id']} --url {base}   (the model bundle)\n"
        "  Ctrl-C stops the service; a running search resumes from its checkpoint on the next start.\n",
        flush=True,
    )


# ---------------------------------------------------------------- the HTTP client


class Client:
    """A small JSON client for the controller; errors become SernasError with the server's message."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self._send("GET", path, params=params))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._json(self._send("POST", path, json=body))

    def download(self, path: str, to: Path) -> Path:
        import httpx

        try:
            with self.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise SernasError(_error_message(response))
                to.parent.mkdir(parents=True, exist_ok=True)
                partial = to.with_name(to.name + ".part")
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                partial.replace(to)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return to

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise SernasError(_error_message(response))
        return response

    def _unreachable(self, exc: Exception) -> SernasError:
        return SernasError(
            f"cannot reach the controller at {self.url} ({exc}); start it with `sernas serve` "
            "or pass --url (SERNAS_URL)"
        )

    @staticmethod
    def _json(response: Any) -> Any:
        return response.json()


def _error_message(response: Any) -> str:
    try:
        error = response.json()["error"]
        message = error["message"]
        fields = "; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in error.get("fields", []))
        return f"{message}" + (f" ({fields})" if fields and fields not in message else "")
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:300]}"


# ---------------------------------------------------------------- submit, status, download


def submit_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /searches body for `sernas submit`'s options."""
    body: dict[str, Any] = {}
    if args.spec is not None:
        if args.corpus or args.data:
            raise ConfigError("--spec holds the whole search: leave out --corpus and --data")
        try:
            body["spec"] = json.loads(args.spec.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the spec {args.spec}: {exc}") from None
        corpus = body["spec"].get("corpus", {}).get("name", "corpus")
        default_name = f"{corpus} from {args.spec.name}"
    else:
        if not args.corpus or args.data is None:
            raise ConfigError("give --corpus and --data (or --spec FILE with a complete SearchSpec)")
        data = args.data.expanduser()
        corpus: dict[str, Any] = {
            "name": args.corpus,
            "root": str(data.resolve() if data.exists() else data),
        }
        if args.classes:
            corpus["classes"] = args.classes
        if args.speakers:
            corpus["speakers"] = args.speakers
        if args.label_map:
            corpus["label_map"] = pairs("--label-map", args.label_map, "excited=happy")
        if args.meta:
            corpus["meta"] = pairs("--meta", args.meta, "improvised=true")
        if args.preset:
            body["preset"] = args.preset
        body |= {
            "corpus": corpus,
            "overrides": overrides(args),
            "seed": args.seed,
            "device": args.device,
            "gpus": args.gpus,
        }
        if args.threads is not None:
            body["threads"] = args.threads
        if args.strategy:
            body["strategy"] = args.strategy
        if args.folds is not None or args.only_folds:
            folds: dict[str, Any] = {}
            if args.folds is not None:
                folds["n_folds"] = args.folds
            if args.only_folds:
                folds["only"] = [int(i) for i in args.only_folds]
            body["folds"] = folds
        default_name = f"{args.corpus} / {args.preset or args.strategy or 'darts'}"
    body["name"] = args.name or default_name
    if args.idempotency_key:
        body["idempotency_key"] = args.idempotency_key
    return body


def submit_command(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    search = client.post("/searches", submit_body(args))
    print(f"search {search['id']} {search['status']}: {search['name']}")
    print(f"  follow it: sernas status {search['id']} --watch   ({client.url}/searches/{search['id']})")
    if args.wait:
        return _watch(client, search["id"])
    return 0


def status_command(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    if args.search_id is None:
        page = client.get("/searches", limit=20)
        if args.json:
            print(json.dumps(page, indent=2))
            return 0
        if not page["items"]:
            print("no searches yet; submit one with `sernas submit`")
        for s in page["items"]:
            print(f"{s['id']}  {s['status']:9}  {s['created_at'][:19]}  {s['name']}")
        return 0
    if args.watch:
        return _watch(client, args.search_id)
    search = client.get(f"/searches/{args.search_id}")
    if args.json:
        print(json.dumps(search, indent=2))
        return 0
    print(_describe(client, search))
    return 0 if search["status"] != "failed" else 1


def _describe(client: Client, search: dict[str, Any]) -> str:
    trials = client.get(f"/searches/{search['id']}/trials", limit=200)
    done = sum(t["state"] != "running" for t in trials["items"])
    lines = [
        f"search {search['id']}: {search['status']}"
        + (" (cancel requested)" if search.get("cancel_requested") else "")
        + f", attempt {search['attempts']}, {done}/{trials['total']} trials finished",
        f"  name: {search['name']}",
    ]
    for t in trials["items"]:
        ua = "" if t["ua"] is None else f" UA {t['ua']:.3f}"
        lines.append(f"  trial {t['id']:>5} {t['key']:40} {t['state']}{ua}")
    if search.get("error"):
        lines.append(f"  error: {search['error']}")
    if search.get("summary"):
        s = search["summary"]
        if "ua_mean" in s and s["ua_mean"] is not None:
            lines.append(f"  test UA {s['ua_mean']:.3f} ± {s.get('ua_std') or 0:.3f}")
    if search["status"] == "completed":
        lines.append(f"  model bundle: sernas download {search['id']} --url {client.url}")
    return "\n".join(lines)


def _watch(client: Client, search_id: str, poll: float = 2.0) -> int:
    last = None
    while True:
        search = client.get(f"/searches/{search_id}")
        trials = client.get(f"/searches/{search_id}/trials", limit=1, sort="id")
        line = f"{search['status']}: {trials['total']} trials"
        if line != last:
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
            last = line
        if search["status"] in FINISHED:
            print(_describe(client, search))
            return 0 if search["status"] == "completed" else 1
        time.sleep(poll)


def download_command(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token, timeout=300)
    to = args.to or Path(f"sernas-{args.search_id}.zip")
    client.download(f"/searches/{args.search_id}/export", to)
    print(f"bundle written to {to}; predict with: sernas predict {to} <audio files>")
    return 0


# ---------------------------------------------------------------- worker


def worker_command(args: argparse.Namespace) -> int:
    if not args.address:
        raise ConfigError("give --address HOST:PORT of the Ray head (or set SERNAS_RAY_ADDRESS)")
    ray = shutil.which("ray", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [ray or "ray", "start", "--address", args.address]
    if args.num_gpus is not None:
        command += ["--num-gpus", str(args.num_gpus)]
    if args.num_cpus is not None:
        command += ["--num-cpus", str(args.num_cpus)]
    command.append("--block")
    print("sernas worker: " + " ".join(command), flush=True)
    if args.dry_run:
        return 0
    if ray is None:
        raise ConfigError("the `ray` command is not installed here: pip install 'ray[default]'")
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    from nas.cli import main  # the whole `sernas` parser: these commands reach it through its entry point

    sys.exit(main())
