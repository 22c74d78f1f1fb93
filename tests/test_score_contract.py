"""No module outside the detector contract (:mod:`stream_ae.model.detector`) computes a score.

A score is made of the model's primitives: its error (``Autoencoder.error``,
``per_feature_error``), its code and reconstruction (``represent``), and the memory bank's
distances (``distance``, ``knn_distance``). Only the contract module calls them to score;
the modules that define them (the autoencoder family, the memory bank, which embeds its own
training rows) call their own. Everything else goes through ``build_detector(checkpoint)``:
no other module builds :class:`~stream_ae.model.detector.Scores`, defines a ``score``
method, or names ``AutoencoderDetector``.

Sample streams have a contract of their own, :mod:`stream_ae.model.series` (windows of keyed
series in, per-series scores out; it serves no checkpoint and calls none of the primitives):
it alone besides the contract module defines ``score``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stream_ae"
CONTRACT = Path("model/detector.py")
SERIES_CONTRACT = Path("model/series.py")
PRIMITIVES = {"error", "per_feature_error", "represent", "distance", "knn_distance"}
DEFINERS = {CONTRACT, Path("model/memory_bank.py")}  # and model/autoencoders/
LOGGERS = {"log", "logger", "logging"}  # log.error(...) is a log line, not a model's error
# (nor is a Kafka client's message.error(), which takes no events: primitives take some)


def violations(source: str, relative: Path) -> list[str]:
    """What in ``source`` (the module at ``relative`` in the package) computes a score outside
    the contract, one line each."""
    found = []
    defines_primitives = relative in DEFINERS or relative.parts[:2] == ("model", "autoencoders")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, receiver = node.func.attr, node.func.value
            if (name in PRIMITIVES and not defines_primitives and node.args
                    and not (isinstance(receiver, ast.Name) and receiver.id in LOGGERS)):
                found.append(f"line {node.lineno}: calls .{name}(), a score primitive")
        if relative != CONTRACT:
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Scores":
                found.append(f"line {node.lineno}: builds Scores")
            if isinstance(node, ast.Name | ast.alias) and "AutoencoderDetector" in (
                    node.id if isinstance(node, ast.Name) else node.name):
                found.append(f"line {node.lineno}: names AutoencoderDetector instead of build_detector")
            if isinstance(node, ast.FunctionDef) and node.name == "score" and relative != SERIES_CONTRACT:
                found.append(f"line {node.lineno}: defines a score method")
    return found


def modules() -> list[Path]:
    return sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("relative", modules(), ids=str)
def test_no_module_outside_the_contract_computes_a_score(relative):
    assert violations((PACKAGE / relative).read_text(), relative) == []


def test_the_check_finds_a_score_computed_elsewhere():
    """The check above can fail: a tool that scores by itself is caught on every count."""
    source = '''
from stream_ae.model.detector import AutoencoderDetector, Scores

def score(model, bank, x):
    log.error("not a score")
    code, reconstruction = model.represent(x)
    return Scores(bank.distance(x, code, reconstruction)), model.error(x)
'''
    found = violations(source, Path("tools/evaluate.py"))
    assert {line.split(": ", 1)[1] for line in found} == {
        "calls .represent(), a score primitive", "calls .distance(), a score primitive",
        "calls .error(), a score primitive", "builds Scores", "defines a score method",
        "names AutoencoderDetector instead of build_detector"}
    assert violations(source, Path("model/detector.py")) == [], "the contract itself may"
