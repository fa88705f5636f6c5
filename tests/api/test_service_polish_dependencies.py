"""Every third-party module that the installed packages import is a runtime dependency in pyproject.toml.

A plain `pip install sernas` installs those and nothing else: a module imported from a dev-only
dependency (as httpx once was, by the client commands) fails there with ModuleNotFoundError.
Imports inside functions count too: they run as soon as the command or route that holds them does.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "workers", "nas", "search_spaces")

# Imports of distributions that are not runtime dependencies, each with the file it may appear in
# and why that is safe.
OPTIONAL = {
    "mamba_ssm": (
        "mamba-ssm",
        "gpu",
        "nas/ops/mamba.py",
        "the [gpu] extra: imported only inside make_mamba's CUDA branch, in a try that falls back to "
        "the pure-PyTorch block (mamba-ssm cannot even be imported without CUDA)",
    ),
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group()) for requirement in requirements}


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _imports() -> dict[str, set[str]]:
    """Top-level names of the absolute imports in the packages' sources -> the files importing them."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for source in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(source.relative_to(REPO).as_posix())
    return found


def _third_party(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    first_party = set(PACKAGES)
    return {
        name: files
        for name, files in imports.items()
        if name not in first_party and name not in sys.stdlib_module_names and name != "__future__"
    }


def test_every_imported_distribution_is_a_runtime_dependency():
    # pyproject.toml, not the installed metadata: the test judges the checkout, even before a reinstall.
    runtime = _requirement_names(_project()["dependencies"])
    providers = packages_distributions()
    missing = []
    for module, files in sorted(_third_party(_imports()).items()):
        if module in OPTIONAL:
            continue
        distributions = providers.get(module)
        assert distributions, f"{module} (imported by {sorted(files)}) comes from no installed distribution"
        if not runtime & {_normalise(d) for d in distributions}:
            missing.append(f"{module} ({', '.join(distributions)}), imported by {', '.join(sorted(files))}")
    assert not missing, "not in [project] dependencies of pyproject.toml: " + "; ".join(missing)


def test_the_optional_imports_are_where_they_are_allowed_and_in_their_extra():
    imports = _third_party(_imports())
    extras = _project()["optional-dependencies"]
    for module, (distribution, extra, allowed_file, _why) in OPTIONAL.items():
        assert imports.get(module) == {allowed_file}, f"{module} is imported from {imports.get(module)}"
        assert distribution in _requirement_names(extras[extra])
        assert distribution not in _requirement_names(_project()["dependencies"])


def test_the_client_commands_need_nothing_from_dev():
    """httpx, which `sernas submit`, `status`, `download` and `serve --example` import, is a runtime
    dependency; the dev extra holds only test and lint tools."""
    assert "api/cli.py" in _imports()["httpx"]
    assert "httpx" in _requirement_names(_project()["dependencies"])
    assert "httpx" not in _requirement_names(_project()["optional-dependencies"]["dev"])
