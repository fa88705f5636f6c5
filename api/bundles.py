"""Model bundles as downloads: a result folder zipped with its model card."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api.errors import ApiError
from api.paths import resolve_inside
from nas.bundle import GENOME, WEIGHTS
from nas.errors import SernasError
from nas.settings import Settings


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
    return (folder / GENOME).is_file() and (folder / WEIGHTS).is_file()
