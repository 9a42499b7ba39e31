"""The package stays type-clean (mypy, settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, need


@pytest.mark.timeout(600)
def test_mypy_is_clean() -> None:
    import importlib.util

    need(importlib.util.find_spec("mypy") is not None, "mypy not installed (it is in the [test] extra)")
    out = subprocess.run([sys.executable, "-m", "mypy", "tray_app"], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
