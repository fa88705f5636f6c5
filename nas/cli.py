"""`sernas` command line: search, export, predict, presets."""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import ConfigError, SernasError

if TYPE_CHECKING:
    from nas.spec import SpecBase

log = logging.getLogger("sernas")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        return args.run(args)
    except SernasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sernas", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="command")

    search = commands.add_parser("search", help="run a search on a corpus and write a result folder")
    add_spec_arguments(search, required=True, data_help="corpus folder (the manifest for csv)")
    search.add_argument("--out", type=Path, default=None, help="result folder (default runs/<time>)")
    search.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/sernas)")
    search.add_argument("--no-progress", action="store_true", help="no progress bars")
    search.set_defaults(run=_search)

    export = commands.add_parser("export", help="zip a result folder's best model into a portable bundle")
    export.add_argument("result", type=Path, help="a result folder written by `sernas search`")
    export.add_argument("--to", type=Path, default=None, help="bundle path (default <result>/bundle.zip)")
    export.set_defaults(run=_export)

    predict = commands.add_parser("predict", help="predict the emotion of audio files with a bundle")
    predict.add_argument("bundle", type=Path, help="an exported bundle .zip or a result folder")
    predict.add_argument(
        "files", nargs="+", help="audio files, folders (searched recursively for .wav and .flac) or glob patterns"
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.set_defaults(run=_predict)

    presets = commands.add_parser("presets", help="list the search-space presets")
    presets.set_defaults(run=_presets)

    # Other packages add commands through this entry-point group (pyproject.toml): the service's
    # serve, submit, status, download and worker come from api.cli, which nas must not import.
    for plugin in entry_points(group="sernas.commands"):
        plugin.load()(commands)
    return parser


def add_spec_arguments(parser: argparse.ArgumentParser, *, required: bool, data_help: str) -> None:
    """The options that describe a search (corpus, preset, overrides, folds), shared by `search`
    and the service's `submit`."""
    parser.add_argument("--corpus", required=required, help="corpus reader, e.g. ravdess, iemocap, csv")
    parser.add_argument("--data", required=required, type=Path, help=data_help)
    parser.add_argument(
        "--preset", default=None, help="search-space preset (see `sernas presets`; default: the strategy's first)"
    )
    parser.add_argument(
        "--strategy",
        default=None,
        help="darts, tpe-asha, hyperband or genetic-ensemble; refuses a preset of another strategy (default: darts)",
    )
    parser.add_argument("--classes", type=csv_list, help="comma-separated labels to keep, e.g. calm,angry")
    parser.add_argument("--speakers", type=csv_list, help="comma-separated speakers to keep")
    parser.add_argument("--label-map", type=csv_list, default=[], help="renames, e.g. excited=happy")
    parser.add_argument("--meta", type=csv_list, default=[], help="metadata filters, e.g. improvised=true")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override the preset, e.g. --set space.nodes=2 --set options.search_epochs=5 (repeatable)",
    )
    parser.add_argument("--folds", type=int, default=None, help="number of speaker folds")
    parser.add_argument("--only-folds", type=csv_list, help="run just these fold indices, e.g. 0,1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--threads", type=int, help="torch threads of the search (results are reproducible for one thread count)"
    )


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """`--set SECTION.FIELD=VALUE` options as a dict; values are JSON, or else a bare word such as an op name."""
    return {k: _value(v) for k, v in pairs("--set", args.overrides, "space.nodes=2").items()}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def pairs(option: str, items: list[str], example: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{option} {item!r}: write it as KEY=VALUE, e.g. {example}")
        pairs[key.strip()] = value.strip()
    return pairs


def build_spec(args: argparse.Namespace) -> SpecBase:
    from nas.spec import CorpusSpec, FoldSpec, spec_from_preset

    corpus = CorpusSpec(
        name=args.corpus,
        root=args.data.resolve(),
        classes=args.classes,
        speakers=args.speakers,
        label_map=pairs("--label-map", args.label_map, "excited=happy"),
        meta=pairs("--meta", args.meta, "improvised=true"),
    )
    folds = FoldSpec(
        n_folds=args.folds or FoldSpec().n_folds,
        only=tuple(int(i) for i in args.only_folds) if args.only_folds else None,
    )
    from search_spaces.presets import default_preset

    preset = args.preset or default_preset(args.strategy or "darts")
    spec = spec_from_preset(
        preset, corpus, overrides(args), folds=folds, seed=args.seed, device=args.device, threads=args.threads
    )
    if args.strategy is not None and args.strategy != spec.strategy:
        raise ConfigError(
            f"preset {preset!r} is for strategy {spec.strategy!r}, not {args.strategy!r}; "
            "pick a preset of that strategy (see `sernas presets`)"
        )
    return spec


def _search(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from nas.reporting import InMemoryReporter
    from nas.runner import run_search

    try:
        spec = build_spec(args)
    except ValidationError as exc:
        raise ConfigError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    reporter = InMemoryReporter(log_epochs=args.no_progress)  # without bars, a line per epoch shows it is alive
    result = run_search(spec, out, cache_dir=args.cache_dir, reporter=reporter, progress=not args.no_progress)
    summary = result.summary
    print(
        f"\ntest UA {summary['ua_mean']:.3f} ± {summary['ua_std']:.3f}, "
        f"WA {summary['wa_mean']:.3f} ± {summary['wa_std']:.3f} over {len(result.folds)} fold(s)"
    )
    if result.final is not None:
        trained_on = result.final.metrics["trained_on"]
        print(
            f"exported: the chosen genome trained on {trained_on['utterances']} utterances of "
            f"{len(trained_on['speakers'])} speakers; the fold figures above are its expected quality on new speakers"
        )
    print(f"results in {out}/ (report.md, genome.json, weights.safetensors, metrics.json)")
    print(f"next: sernas export {out}   then   sernas predict {out}/bundle.zip <audio files>")
    return 0


def _export(args: argparse.Namespace) -> int:
    from nas.bundle import export_bundle

    path = export_bundle(args.result, args.to or args.result / "bundle.zip")
    print(f"bundle written to {path}")
    return 0


def audio_files(arguments: list[str]) -> list[Path]:
    """The audio files the arguments name: files as given, folders searched recursively, glob patterns
    expanded (for shells that leave them alone); a folder or pattern that names no audio is an error."""
    from nas.data.corpora import AUDIO_SUFFIXES

    files: list[Path] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        elif not path.exists() and any(c in argument for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        else:
            files.append(path)  # a missing file is reported by name with the predictions
            continue
        if not found:
            raise ConfigError(f"{argument}: no audio files there (looked for {', '.join(AUDIO_SUFFIXES)})")
        files.extend(found)
    return files


def _predict(args: argparse.Namespace) -> int:
    from nas.bundle import predict_files

    failed = 0
    for p in predict_files(args.bundle, audio_files(args.files)):
        if p.error:
            failed += 1
            print(f"{p.path}: error: {p.error}", file=sys.stderr)
        elif args.json:
            print(json.dumps({"path": str(p.path), "label": p.label, "probabilities": p.probabilities}))
        else:
            probs = "  ".join(f"{k} {v:.2f}" for k, v in sorted(p.probabilities.items(), key=lambda kv: -kv[1]))
            print(f"{p.path}: {p.label}  ({probs})")
    return 1 if failed else 0


def _presets(args: argparse.Namespace) -> int:
    from search_spaces import PRESETS

    for preset in PRESETS.values():
        print(f"{preset.name:24} [{preset.strategy}] {preset.description}")
    return 0
