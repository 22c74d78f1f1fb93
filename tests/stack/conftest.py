"""Each test's outcome on its item (``item.rep_call``), so that a fixture can print the
stack's logs after a failed test (pytest's documented ``pytest_runtest_makereport`` recipe)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
