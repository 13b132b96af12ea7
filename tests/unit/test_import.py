"""The package imports without pytest; the console script runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import llm_cache


def test_import_does_not_import_pytest():
    code = "import sys, llm_cache; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _console_script() -> str:
    found = shutil.which("llm-cache", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip("llm-cache console script is not installed next to this interpreter")
    return found


def test_console_script_version():
    out = subprocess.run([_console_script(), "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"llm-cache {llm_cache.__version__}"


def test_console_script_help():
    out = subprocess.run([_console_script(), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("usage: llm-cache")
    assert "--version" in out.stdout


def test_console_script_rejects_unknown_option():
    out = subprocess.run([_console_script(), "--bogus"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "unrecognized arguments: --bogus" in out.stderr
