"""The package imports without pytest; the console script runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


# the metrics exporters' libraries too: only to_prometheus() and to_otel() bring them in
HEAVY = ("vcr", "httpx", "httpx2", "requests", "urllib3", "aiohttp", "prometheus_client", "opentelemetry")
_LIST = (
    "import sys; print(sorted({m.split('.')[0] for m in sys.modules} & set(%r)))"
)


def _loaded_after(code: str, also: tuple[str, ...] = ()) -> list[str]:
    script = code + "\n" + _LIST % (HEAVY + also,)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_llm_cache_imports_no_client_vcrpy_or_yaml():
    assert _loaded_after("import llm_cache", also=("yaml", "pytest", "filelock")) == []


def test_public_names_load_without_vcrpy_or_a_client():
    code = "from llm_cache import LLMCache, CacheMiss, Settings, intercept, Mode, make_key, FileStore"
    assert _loaded_after(code) == []


def test_metrics_and_their_text_import_no_exporter_library():
    code = "import llm_cache\ncache = llm_cache.LLMCache()\ncache.metrics.prometheus_text()\nllm_cache.Metrics"
    assert _loaded_after(code) == []


def test_the_first_intercepted_block_brings_vcrpy_in():
    code = "import llm_cache\nwith llm_cache.LLMCache().intercept(): pass"
    assert "vcr" in _loaded_after(code)


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_cli_version_and_help_import_no_client(flag):
    code = f"import sys\nfrom llm_cache.cli import main\ntry:\n    main([{flag!r}])\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == []


def test_value_parsers_are_a_leaf_and_stores_do_not_import_settings():
    code = "import llm_cache.values, llm_cache.stores\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith('llm_cache.settings')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from llm_cache import values

    source = open(values.__file__, encoding="utf-8").read()
    ours = [line for line in source.splitlines() if line.startswith("from .")]
    assert ours == ["from .errors import ConfigError"]
    # nor does any store module, not even inside a function (a deferred import hides a circle)
    from llm_cache import stores

    found = [
        f"{path.name}: {line.strip()}"
        for path in sorted(Path(stores.__file__).parent.glob("*.py"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if "from ..settings" in line or "llm_cache.settings" in line
    ]
    assert found == []
