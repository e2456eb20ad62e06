"""Suite-wide options: real-dongle tests run only on a bench with --hardware."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("han-ota bench")
    group.addoption("--hardware", action="store_true", help="run tests marked hardware against a real coordinator")
    group.addoption("--radio", default=None, help="bench radio kind: ezsp or znp")
    group.addoption("--path", default=None, help="bench radio path, e.g. /dev/serial/by-id/...")
    group.addoption("--device", action="append", default=[], help="bench device KIND:IEEE (repeatable)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="hardware: needs a real coordinator and devices; run on a bench with --hardware (see README)")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
