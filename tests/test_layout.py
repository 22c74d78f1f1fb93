"""The layout keeps its promises: imports go one way, and the daemon's path stays light.

Layers, lowest first (README, Architecture): ``kafka``, ``model`` and ``telemetry`` import
none of the project's other packages; ``pipeline`` imports only those three; ``service``
imports those and the pipeline; ``tools`` anything below it; ``cli`` sits on top. Test
tooling (the Apache Kafka launcher, the scripted ends) lives under ``tests/``: the package
never imports it. That no module outside the detector contract computes a score is
``tests/test_score_contract.py``'s.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stream_ae"
ALLOWED = {  # package -> the project's packages it may import
    "kafka": set(),
    "model": set(),
    "telemetry": set(),
    "pipeline": {"kafka", "model", "telemetry"},
    "service": {"kafka", "model", "telemetry", "pipeline"},
    "tools": {"kafka", "model", "telemetry", "pipeline", "service"},
    "cli": {"kafka", "model", "telemetry", "pipeline", "service", "tools"},
    "__main__": {"cli"},
}


def project_imports(path: Path) -> set[str]:
    """The top-level project packages a module imports (``stream_ae.<package>...``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        found.update(name.split(".")[1] for name in names if name.startswith("stream_ae."))
    return found


def modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path.parent != PACKAGE or path.stem != "__init__")


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    relative = path.relative_to(PACKAGE)
    package = relative.parts[0].removesuffix(".py")
    upward = project_imports(path) - ALLOWED[package] - {package}
    assert not upward, f"{relative} ({package}) imports {sorted(upward)}, above it or beside it"


def test_the_daemons_path_imports_no_pandas_scikit_learn_or_matplotlib():
    """``stream-ae run`` loads the command line, the service and the pipeline: none of them
    may pull in the heavy libraries that only training, evaluation and the tools need."""
    probe = ("import sys, stream_ae.pipeline.loop, stream_ae.service.daemon, stream_ae.cli; "
             "print(sorted(m for m in ('pandas', 'sklearn', 'matplotlib') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", f"the daemon's path imports {loaded.strip()}"


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_the_package_imports_no_test_tooling(path):
    """What ships in the wheel runs without ``tests/`` (the Apache Kafka launcher lives there)."""
    tree = ast.parse(path.read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0]
    assert not [name for name in imported if name == "tests" or name.startswith("tests.")]
