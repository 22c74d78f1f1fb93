"""The Grafana dashboard's queries, read out of its file and run against a Prometheus: shared by
the test against a Prometheus beside a detector (``test_prometheus``) and the stack suite
(``tests/stack``), against the stack's own."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "stream-ae.json"


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """``(panel title / refId, expr)`` of every target of every panel, rows' panels included."""
    found = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"{panel['title']} [{target.get('refId', '?')}]", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace ``$name``, ``${name}`` and ``${name:format}`` as Grafana does; fail on unknown ones."""
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return variables[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def dashboard_variables(dashboard: dict, builtins: dict[str, str]) -> dict[str, str]:
    """Grafana's built-in variables (``builtins``: ``__rate_interval`` and the like, as Grafana sets
    them for the scrape interval) and each template variable at its "All" value (``.*``)."""
    values = dict(builtins)
    for variable in dashboard.get("templating", {}).get("list", []):
        values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def finite_samples(data: dict) -> list[float]:
    """The finite values of an instant query's result (vector or scalar)."""
    if data["resultType"] == "scalar":
        values = [data["result"][1]]
    elif data["resultType"] == "vector":
        values = [item["value"][1] for item in data["result"]]
    else:
        pytest.fail(f"unexpected result type {data['resultType']}")
    return [float(v) for v in values if math.isfinite(float(v))]


def assert_every_query_has_data(query: Callable[[str], dict], named: list[tuple[str, str]], what: str) -> None:
    """Run each ``(name, promql)`` through ``query`` (an instant query returning the API's
    ``data``); print a line per query and fail listing those without data."""
    report, empty = [], []
    for name, promql in named:
        values = finite_samples(query(promql))
        report.append(f"{'ok   ' if values else 'EMPTY'} {name}: {len(values)} series  {promql}  -> {values[:3]}")
        if not values:
            empty.append(f"{name}: {promql}")
    print("\n".join([f"{what}:"] + report))
    assert empty == [], f"{what} without data:\n" + "\n".join(empty)


def assert_dashboard_has_data(query: Callable[[str], dict], builtins: dict[str, str]) -> None:
    """Every query of every panel of the dashboard, with Grafana's variables substituted
    (``builtins`` for its built-in ones), returns finite data through ``query``; every template
    variable (``label_values(selector, label)``) has values."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = dashboard_variables(dashboard, builtins)
    queries = dashboard_queries(dashboard)
    panels = {title.rsplit(" [", 1)[0] for title, _ in queries}
    assert len(panels) >= 12
    assert_every_query_has_data(query, [(title, substitute(expr, variables)) for title, expr in queries],
                                "dashboard queries")

    for variable in dashboard["templating"]["list"]:
        definition = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition.strip())
        assert match, f"variable {variable['name']}: unsupported query {definition}"
        selector, label = match.groups()
        result = query(selector)["result"]
        assert any(label in item["metric"] for item in result), f"variable {variable['name']} has no values"
