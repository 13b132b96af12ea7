"""Suite-level and start-up benchmarks of pytest-llm-cache: whole pytest runs, timed from outside.

    python benchmarks/bench_suite.py                  # 300 tests, 5 rounds; start-up 15 rounds
    python benchmarks/bench_suite.py --quick          # 20 tests, 2 rounds: checks the script works
    python benchmarks/bench_suite.py --rounds 3 --tests 300 --json out.json

Sections: suite (a generated project of N tests, each one plain and one streamed chat
completion, run over an in-process MockTransport with the plugin disabled, then replayed from
cassettes in a fresh checkout and again), startup (`pytest --collect-only` of 200 trivial
tests with and without the plugin; `import llm_cache` and what it pulls in). Everything runs in
subprocesses, so this script imports nothing of the plugin. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # fakeapi.FakeLLMServer

from fakeapi import FakeLLMServer

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "suite.json"
TABLE_HEADER = "pytest-llm-cache suite benchmarks"
META_DIR = ".llm-cache"  # derived data beside the cassettes: parsed copies, usage and scan index
HEAVY = ("vcr", "httpx", "httpx2", "requests", "urllib3", "yaml", "pytest")
RUN_TIMEOUT = 600  # seconds, per pytest subprocess
PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider")

# Targets, judged on medians of the same run.
FRESH_LIMIT = 1.10  # replay in a fresh checkout, x floor
WARM_LIMIT = 1.05  # replay again, x floor
STARTUP_LIMIT_MS = 25.0  # collect-only with the plugin, ms over without


@dataclass(frozen=True)
class Config:
    quick: bool
    tests: int  # tests in the suite project
    rounds: int  # suite rounds (floor, fresh, warm each)
    startup_tests: int
    startup_rounds: int  # collect-only and import rounds (with and without each)
    warmup: bool  # one untimed run of each kind before the rounds


# -- small helpers ------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def note(text: str) -> None:
    """Progress, on stderr: the table on stdout stays clean."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


def spread(samples: list[float]) -> dict[str, Any]:
    """Median, min and max of samples in seconds, and the samples themselves."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "runs": samples,
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def clean_env(workdir: Path) -> dict[str, str]:
    """This environment without settings that would change what the runs do, and with bytecode
    cached under ``workdir``. Without a cache (PYTHONDONTWRITEBYTECODE) every run compiles the
    source tree's modules and pytest rewrites the plugin's and the tests' asserts again: about
    1 s more per run here, more with the plugin than without, which a normal checkout never pays.
    A prefix keeps the bytecode out of the source tree."""
    drop = (
        "LLM_CACHE_",
        "PYTEST_",
        "OPENAI_",
        "ANTHROPIC_",
        "SUITE_BENCH_",
        "PYTHONDONTWRITEBYTECODE",
        "CI",  # the "fresh, in CI" run sets it; no other may (no parsed copies are written then)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in (
        "pytest-llm-cache",
        "pytest",
        "openai",
        "httpx2",
        "httpx",
        "vcrpy",
        "PyYAML",
        "pytest-xdist",
        "hypothesis",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "loadavg_at_start": loadavg(),
    }


def loadavg() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


def sdk_http_module() -> str:
    """The HTTP client module the installed openai SDK is built on: httpx2 or httpx."""
    base = importlib.import_module("openai._base_client")
    return "httpx2" if hasattr(base, "httpx2") else "httpx"


@contextmanager
def closed_port() -> Iterator[str]:
    """A base URL on 127.0.0.1 where nothing listens: the port stays bound (never listening)
    while in use, so no other process can take it, and every connection is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


@dataclass
class Run:
    seconds: float  # wall time, launch to exit
    cpu: float  # the child's user + system CPU time: less disturbed by other processes
    stdout: str
    stderr: str


def child_cpu() -> float:
    """User + system CPU seconds of every child waited for so far (runs are sequential, so the
    difference around one run is that run's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pytest(
    project: Path, args: list[str], env: dict[str, str], expect_passed: int, what: str,
    outcome: str = "passed",
) -> Run:
    """One timed ``python -m pytest`` in ``project``; fails unless every test passed (or,
    with ``outcome="failed"``, every test failed)."""
    command = [sys.executable, *PYTEST, *args]
    cpu = child_cpu()
    started = time.perf_counter()
    proc = subprocess.run(
        command,
        check=False,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    seconds = time.perf_counter() - started
    cpu = child_cpu() - cpu
    passed = re.search(rf"(\d+) {outcome}", proc.stdout)
    if proc.returncode != (outcome != "passed") or passed is None or int(passed.group(1)) != expect_passed:
        raise RuntimeError(
            f"{what}: pytest exited {proc.returncode}, expected {expect_passed} "
            f"{outcome}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        )
    return Run(seconds, cpu, proc.stdout, proc.stderr)


def cache_counts(stdout: str) -> dict[str, int] | None:
    """hits, misses and recorded from the plugin's terminal summary, when it has that line."""
    found = re.search(r"hits: (\d+)\s+misses: (\d+)\s+recorded: (\d+)", stdout)
    if found is None:
        return None
    return dict(zip(("hits", "misses", "recorded"), map(int, found.groups())))


# -- section 1: the suite ------------------------------------------------------------------------

# The conftest chooses the client from SUITE_BENCH_MODE; the test files are the same for every
# run. The client lives for the session: building one with the SDK's default transport costs
# ~20 ms (an SSL context), a MockTransport client ~1 ms, and a per-test client would put that
# difference, which is not the plugin's, in every test.
CONFTEST = '''\
import json
import os
import re

import openai
import pytest

MODE = os.environ["SUITE_BENCH_MODE"]  # "floor" or "cache"
BASE_URL = os.environ["SUITE_BENCH_BASE_URL"]
CREATED = 1722902400

if MODE == "floor":
    import {http} as http

    def _pieces(text):
        return [p for p in re.split(r"(?<=\\s)(?=\\S)", text) if p] or [""]

    def _answer(request):
        """What the API answers (the shape tests/fakeapi.py serves): a chat.completion, or
        chat.completion.chunk events ending in data: [DONE]."""
        body = json.loads(request.content)
        text = "echo: " + body["messages"][-1]["content"]
        head = {{"id": "chatcmpl-suite", "created": CREATED, "model": "gpt-4o-2024-08-06",
                "system_fingerprint": "fp_aaa111"}}
        words = len(text.split())
        if not body.get("stream"):
            message = {{"role": "assistant", "content": text, "refusal": None}}
            choice = {{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}}
            usage = {{"prompt_tokens": 3, "completion_tokens": words, "total_tokens": 3 + words}}
            payload = {{**head, "object": "chat.completion", "choices": [choice], "usage": usage,
                       "service_tier": "default"}}
            return http.Response(200, headers={{"content-type": "application/json"}},
                                 content=json.dumps(payload).encode())

        def chunk(delta, reason=None):
            choice = {{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}}
            return {{**head, "object": "chat.completion.chunk", "choices": [choice]}}

        chunks = [chunk({{"role": "assistant", "content": "", "refusal": None}})]
        chunks += [chunk({{"content": part}}) for part in _pieces(text)]
        chunks.append(chunk({{}}, "stop"))
        events = "".join(f"data: {{json.dumps(c)}}\\n\\n" for c in chunks) + "data: [DONE]\\n\\n"
        return http.Response(200, headers={{"content-type": "text/event-stream; charset=utf-8"}},
                             content=events.encode())

    def _http_client():
        return http.Client(transport=http.MockTransport(_answer))

    @pytest.fixture
    def llm_cache():
        """The plugin is off (-p no:llm_cache): the tests ask for the fixture all the same."""
        yield None

else:

    def _http_client():
        return None  # the SDK's own client, intercepted by the plugin


@pytest.fixture(scope="session")
def client():
    sdk = openai.OpenAI(base_url=BASE_URL, api_key="sk-test-suite-bench", max_retries=0,
                        http_client=_http_client())
    yield sdk
    sdk.close()
'''

TEST = """

def test_question_{n:05d}(llm_cache, client):
    messages = [{{"role": "user", "content": "suite question {n}: what comes after {n}?"}}]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert reply.choices[0].message.content == "echo: suite question {n}: what comes after {n}?"
    stream = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "echo: suite question {n}: what comes after {n}?"
"""

TESTS_PER_FILE = 50


def write_suite(project: Path, tests: int, http: str) -> None:
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "conftest.py").write_text(CONFTEST.format(http=http))
    for first in range(0, tests, TESTS_PER_FILE):
        body = "".join(TEST.format(n=n) for n in range(first, min(tests, first + TESTS_PER_FILE)))
        (project / f"test_suite_{first // TESTS_PER_FILE:03d}.py").write_text(body.lstrip("\n"))


def section_suite(cfg: Config, workdir: Path) -> dict[str, Any]:
    http = sdk_http_module()
    project = workdir / "suite"
    write_suite(project, cfg.tests, http)
    cassettes = project / "cassettes"
    calls = 2 * cfg.tests
    base_env = clean_env(workdir)

    # Record once, against a running fake API.
    with FakeLLMServer() as server:
        env = {
            **base_env,
            "SUITE_BENCH_MODE": "cache",
            "SUITE_BENCH_BASE_URL": server.openai_base_url,
        }
        record = run_pytest(project, ["--llm-cache=record"], env, cfg.tests, "record")
        served = server.count("/v1/chat/completions")
    written = len(list(cassettes.rglob("*.yaml")))
    if served != calls or written != calls:
        raise RuntimeError(
            f"record: the fake API got {served} calls and {written} cassettes were "
            f"written, expected {calls} of each"
        )
    note(f"suite: recorded {written} cassettes in {record.seconds:.1f} s")

    counts: dict[str, dict[str, int] | None] = {}
    runs: dict[str, list[Run]] = {"floor": [], "fresh": [], "warm": [], "fresh_ci": [], "missed": []}
    nothing = workdir / "no-cassettes"  # every request misses: each test fails at its first call
    nothing.mkdir(exist_ok=True)
    with closed_port() as nowhere:
        floor_env = {**base_env, "SUITE_BENCH_MODE": "floor", "SUITE_BENCH_BASE_URL": nowhere}
        cache_env = {**base_env, "SUITE_BENCH_MODE": "cache", "SUITE_BENCH_BASE_URL": nowhere}

        def floor() -> Run:
            return run_pytest(project, ["-p", "no:llm_cache"], floor_env, cfg.tests, "floor")

        def replay(way: str, env: dict[str, str] = cache_env) -> Run:
            run = run_pytest(project, [], env, cfg.tests, f"replay ({way})")
            got = counts[way] = cache_counts(run.stdout)
            if got is not None and (got["hits"] != calls or got["misses"] or got["recorded"]):
                raise RuntimeError(f"replay ({way}): expected {calls} hits, got {got}")
            return run

        def fresh() -> Run:
            shutil.rmtree(cassettes / META_DIR, ignore_errors=True)  # as in a fresh clone
            return replay("fresh")

        def fresh_ci() -> Run:  # a CI clone: CI set, so no parsed copies are written
            shutil.rmtree(cassettes / META_DIR, ignore_errors=True)
            return replay("fresh_ci", {**cache_env, "CI": "true"})

        def missed() -> Run:  # a prompt change that misses every test: how soon the run reports
            run = run_pytest(
                project, [f"--llm-cache-dir={nothing}"], cache_env, cfg.tests, "replay (missed)", "failed"
            )
            got = counts["missed"] = cache_counts(run.stdout)
            if got is None or got["misses"] != cfg.tests or got["hits"] or got["recorded"]:
                raise RuntimeError(f"replay (missed): expected {cfg.tests} misses, got {got}")  # not failed otherwise
            return run

        if cfg.warmup:  # untimed: page cache, bytecode
            floor()
            fresh()
        for r in range(cfg.rounds):
            started = time.perf_counter()
            runs["floor"].append(floor())
            runs["fresh"].append(fresh())
            runs["warm"].append(replay("warm"))
            runs["fresh_ci"].append(fresh_ci())
            runs["missed"].append(missed())
            note(
                f"suite: round {r + 1}/{cfg.rounds} in {time.perf_counter() - started:.1f} s "
                f"(floor {runs['floor'][-1].seconds:.2f} s, fresh {runs['fresh'][-1].seconds:.2f} s, "
                f"warm {runs['warm'][-1].seconds:.2f} s, fresh in CI {runs['fresh_ci'][-1].seconds:.2f} s, "
                f"missed {runs['missed'][-1].seconds:.2f} s)"
            )
    derived = sum(1 for p in (cassettes / META_DIR).rglob("*") if p.is_file())  # after a CI run

    ways = {}
    for way, done in runs.items():
        ways[way] = spread([run.seconds for run in done])
        ways[way]["cpu"] = spread([run.cpu for run in done])
    base, base_cpu = ways["floor"]["median"], ways["floor"]["cpu"]["median"]
    for way in ("fresh", "warm", "fresh_ci", "missed"):
        over = ways[way]["median"] - base
        ways[way].update(
            ratio=ways[way]["median"] / base,
            over_floor_s=over,
            ms_per_test_over_floor=over / cfg.tests * 1000,
            cpu_ratio=ways[way]["cpu"]["median"] / base_cpu,
            cpu_ms_per_test_over_floor=(ways[way]["cpu"]["median"] - base_cpu) / cfg.tests * 1000,
            cache_counts=counts.get(way),
        )
    return {
        "tests": cfg.tests,
        "calls": calls,
        "rounds": cfg.rounds,
        "sdk_http_module": http,
        "record": {
            "seconds": record.seconds,
            "cassettes_written": written,
            "cache_counts": cache_counts(record.stdout),
        },
        "derived_files_after_ci": derived,
        "ways": ways,
    }


SUITE_LABEL = {
    "floor": "floor (MockTransport, -p no:llm_cache)",
    "fresh": "replay, fresh checkout",
    "warm": "replay again (warm)",
    "fresh_ci": "replay, fresh checkout in CI",
    "missed": "replay, every test misses (fails)",
}


def print_suite(res: dict[str, Any]) -> None:
    say(
        f"1. Suite: {res['tests']} tests, each one plain and one streamed chat completion (openai SDK "
        f"over {res['sdk_http_module']}),"
    )
    say(
        f"   `python {' '.join(PYTEST)}`, wall time of the whole run (median of {res['rounds']} "
        "interleaved rounds);"
    )
    say(f"   fresh: {META_DIR}/ removed before the run; warm: the same run again right after;")
    say("   in CI: fresh again with CI=true, which writes no parsed copies (llm_cache_parsed_copies = auto,")
    say("   which outside CI writes one of every cassette read, for the warm run to read instead of the YAML);")
    say("   every test misses: an empty cassette dir, so each test fails at its first call (a prompt change)")
    say("   ms/test over: (median - floor median) / tests; cpu: the child's user + system time")
    say(
        f"   {'':<40}{'median s':>9}{'min s':>8}{'max s':>8}{'x floor':>9}{'ms/test over':>14}"
        f"{'cpu s':>8}{'cpu x':>7}{'cpu ms/test':>13}"
    )
    for way in ("floor", "fresh", "warm", "fresh_ci", "missed"):
        w = res["ways"][way]
        if way == "floor":
            ratio, per, cpu_ratio, cpu_per = "1.000", "", "1.000", ""
        else:
            ratio, per = f"{w['ratio']:.3f}", f"{w['ms_per_test_over_floor']:+.2f}"
            cpu_ratio, cpu_per = f"{w['cpu_ratio']:.3f}", f"{w['cpu_ms_per_test_over_floor']:+.2f}"
        say(
            f"   {SUITE_LABEL[way]:<40}{w['median']:>9.3f}{w['min']:>8.3f}{w['max']:>8.3f}"
            f"{ratio:>9}{per:>14}{w['cpu']['median']:>8.3f}{cpu_ratio:>7}{cpu_per:>13}"
        )
    rec = res["record"]
    say(
        f"   recording them once (untimed for the targets): {rec['seconds']:.2f} s, "
        f"{rec['cassettes_written']} cassettes; {res['derived_files_after_ci']} files in {META_DIR}/ after the CI run"
    )


# -- section 2: start-up ---------------------------------------------------------------------------

IMPORT_PROBE = textwrap.dedent("""
    import json, sys
    import llm_cache
    heavy = {heavy!r}
    print(json.dumps([m for m in heavy if m in sys.modules]))
""")


def import_lines(stderr: str) -> list[tuple[int, str, float]]:
    """(depth, module, cumulative ms) of each line of ``python -X importtime``, in its order:
    a module's own imports come right before it, one level deeper."""
    rows = []
    for line in stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2][1:]  # after the separator's space, two spaces per level
        rows.append(((len(name) - len(name.lstrip(" "))) // 2, name.strip(), int(parts[1]) / 1000))
    return rows


def direct_imports(stderr: str, module: str, limit: int = 8) -> list[dict[str, Any]]:
    """What ``module`` imports itself (first imports only), the costliest first."""
    rows = import_lines(stderr)
    at = max((i for i, (depth, name, _) in enumerate(rows) if name == module), default=None)
    if at is None:
        return []
    base = rows[at][0]
    children = []
    for depth, name, cumulative in reversed(rows[:at]):
        if depth <= base:
            break
        if depth == base + 1:
            children.append((cumulative, name))
    children.sort(reverse=True)
    return [
        {"module": name, "cumulative_ms": ms}
        for ms, name in [(rows[at][2], module), *children[:limit]]
    ]


def added_imports(with_stderr: str, without_stderr: str, limit: int = 8) -> dict[str, Any]:
    """What a run imports only when the plugin is loaded: the modules of packages the run
    without it never imports, each counted once, at the outermost such import (modules that
    pytest loads through importlib, as it loads entry points, get no line of their own)."""
    without = {name.split(".")[0] for _, name, _ in import_lines(without_stderr)}
    total: dict[str, float] = {}  # top-level package: its outermost imports' cumulative ms
    nested: dict[str, float] = {}  # packages first imported inside another added package
    stack: list[tuple[int, bool]] = []  # (depth, inside an added import) of the enclosing lines
    for depth, name, cumulative in reversed(import_lines(with_stderr)):  # parents first
        while stack and stack[-1][0] >= depth:
            stack.pop()
        inside = bool(stack) and stack[-1][1]
        package = name.split(".")[0]
        added = package not in without
        if added and not inside:
            total[package] = total.get(package, 0.0) + cumulative
        elif added and "." not in name and package not in total:
            nested[package] = cumulative
        stack.append((depth, inside or added))

    def ranked(found: dict[str, float]) -> list[dict[str, Any]]:
        rows = sorted(((ms, name) for name, ms in found.items()), reverse=True)[:limit]
        return [{"module": name, "cumulative_ms": ms} for ms, name in rows]

    return {"outermost": ranked(total), "inside": ranked(nested)}


def profiled(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """The ``-X importtime`` report of one run of ``command`` (a ``python`` command line)."""
    proc = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stderr


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-2000:]}"
        )
    return seconds


def section_startup(cfg: Config, workdir: Path) -> dict[str, Any]:
    project = workdir / "startup"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_trivial.py").write_text(
        "".join(f"def test_{n}():\n    pass\n\n\n" for n in range(cfg.startup_tests)).rstrip()
        + "\n"
    )
    env = clean_env(workdir)
    # The plugin alone: no other installed plugin loaded (PYTEST_DISABLE_PLUGIN_AUTOLOAD), ours
    # asked for by name. Another plugin's own start-up (one installed here imports for
    # 200 to 300 ms) moves from run to run by more than ours costs.
    alone = {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    collect = [sys.executable, *PYTEST, "--collect-only"]
    pairs: dict[str, tuple[dict[str, list[str]], dict[str, str]]] = {
        "collect": ({"with": collect, "without": [*collect, "-p", "no:llm_cache"]}, env),
        "collect_alone": ({"with": [*collect, "-p", "llm_cache.pytest.plugin"], "without": collect}, alone),
        "import": (
            {"with": [sys.executable, "-c", "import llm_cache"], "without": [sys.executable, "-c", "pass"]},
            env,
        ),
    }
    out: dict[str, Any] = {"tests": cfg.startup_tests, "rounds": cfg.startup_rounds}
    for name, (commands, run_env) in pairs.items():
        for command in commands.values():  # untimed: page cache, bytecode
            timed(command, project, run_env)
        samples: dict[str, list[float]] = {"with": [], "without": []}
        for r in range(cfg.startup_rounds):
            order = ("with", "without") if r % 2 == 0 else ("without", "with")  # ABBA
            for which in order:
                samples[which].append(timed(commands[which], project, run_env))
        res: dict[str, Any] = {which: spread(s) for which, s in samples.items()}
        res["delta_ms"] = (res["with"]["median"] - res["without"]["median"]) * 1000
        # each round's two runs back to back: the machine's drift between rounds cancels out
        res["paired_delta_ms"] = statistics.median(
            (w - wo) * 1000 for w, wo in zip(samples["with"], samples["without"])
        )
        out[name] = res
        note(
            f"startup: {name}: {res['with']['median']:.3f} s with, {res['without']['median']:.3f} s "
            f"without ({res['delta_ms']:+.1f} ms; paired {res['paired_delta_ms']:+.1f} ms)"
        )

    probe = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE.format(heavy=HEAVY)],
        check=True,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    out["heavy_modules_after_import"] = json.loads(probe.stdout.strip().splitlines()[-1])
    out["import_profile"] = direct_imports(
        profiled(pairs["import"][0]["with"], project, env), "llm_cache"
    )
    collect_with = profiled(pairs["collect"][0]["with"], project, env)
    out["plugin_imports"] = added_imports(
        collect_with, profiled(pairs["collect"][0]["without"], project, env)
    )
    return out


def print_startup(res: dict[str, Any]) -> None:
    say(f"2. Start-up (median of {res['rounds']} rounds, with and without in alternating order)")
    c, i = res["collect"], res["import"]
    say(
        f"   `pytest --collect-only`, {res['tests']} trivial tests: {c['with']['median']:.3f} s with the "
        f"plugin, {c['without']['median']:.3f} s with -p no:llm_cache: {c['delta_ms']:+.1f} ms "
        f"(median of each round's difference: {c['paired_delta_ms']:+.1f} ms)"
    )
    a = res.get("collect_alone")
    if a:
        say(
            f"   the same with no other plugin (PYTEST_DISABLE_PLUGIN_AUTOLOAD=1), ours by -p: "
            f"{a['with']['median']:.3f} s, {a['without']['median']:.3f} s without: {a['delta_ms']:+.1f} ms "
            f"(paired {a['paired_delta_ms']:+.1f} ms)"
        )
    say(
        f'   `python -c "import llm_cache"`: {i["with"]["median"]:.3f} s, `python -c pass`: '
        f"{i['without']['median']:.3f} s: {i['delta_ms']:+.1f} ms"
    )
    heavy = res["heavy_modules_after_import"]
    say(
        f"   in sys.modules after `import llm_cache`: {', '.join(heavy) if heavy else 'none'} "
        f"(of {', '.join(HEAVY)})"
    )
    if res["import_profile"]:
        own, *children = res["import_profile"]
        say(
            f"   -X importtime: import llm_cache {own['cumulative_ms']:.0f} ms; its own imports: "
            + ", ".join(f"{r['module']} {r['cumulative_ms']:.0f}" for r in children)
        )
    added = res["plugin_imports"]
    if added["outermost"]:
        say(
            "   imports only with the plugin, collect-only (cumulative ms, -X importtime): "
            + ", ".join(f"{r['module']} {r['cumulative_ms']:.0f}" for r in added["outermost"])
            + (
                "; inside those: "
                + ", ".join(f"{r['module']} {r['cumulative_ms']:.0f}" for r in added["inside"])
                if added["inside"]
                else ""
            )
        )


# -- targets and output ------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(measure: str, value: float | None, shown: str, target: str, ok: bool | None) -> None:
        rows.append(
            {"measure": measure, "value": value, "shown": shown, "target": target, "pass": ok}
        )

    suite = results.get("suite")
    if suite:
        ways = suite["ways"]
        for way, limit in (("fresh", FRESH_LIMIT), ("fresh_ci", FRESH_LIMIT), ("warm", WARM_LIMIT)):
            v = ways[way]["ratio"]
            add(
                f"suite, {SUITE_LABEL[way]} / floor", v, f"{v:.3f}x", f"<= {limit:.2f}x", v <= limit
            )
        for way in ("fresh", "fresh_ci", "warm", "missed"):
            v = ways[way]["ms_per_test_over_floor"]
            add(f"suite, {SUITE_LABEL[way]}: per test over floor", v, f"{v:+.2f} ms", "-", None)
    st = results.get("startup")
    if st:
        v = st["collect"]["delta_ms"]
        add(
            f"collect-only {st['tests']} tests, with plugin - without",
            v,
            f"{v:+.1f} ms",
            f"<= +{STARTUP_LIMIT_MS:.0f} ms",
            v <= STARTUP_LIMIT_MS,
        )
        v = st["collect"]["paired_delta_ms"]
        add("  the same, median of each round's difference", v, f"{v:+.1f} ms",
            f"<= +{STARTUP_LIMIT_MS:.0f} ms", v <= STARTUP_LIMIT_MS)
        if "collect_alone" in st:
            v = st["collect_alone"]["paired_delta_ms"]
            add("  the same, no other plugin loaded (paired)", v, f"{v:+.1f} ms",
                f"<= +{STARTUP_LIMIT_MS:.0f} ms", v <= STARTUP_LIMIT_MS)
        v = st["import"]["delta_ms"]
        add("python -c 'import llm_cache' - python -c pass", v, f"{v:+.1f} ms", "-", None)
        heavy = st["heavy_modules_after_import"]
        add("heavy modules after import llm_cache", None, ", ".join(heavy) or "none", "-", None)
        # the package promises this in its docstring: the pytest plugin is a separate module
        add(
            "import llm_cache leaves pytest unimported",
            None,
            "no" if "pytest" in heavy else "yes",
            "yes",
            "pytest" not in heavy,
        )
    return rows


def print_targets(rows: list[dict[str, Any]]) -> None:
    width = max(len(r["measure"]) for r in rows) + 2
    value_width = max(12, *(len(r["shown"]) + 2 for r in rows))
    say(f"   {'measure':<{width}}{'value':>{value_width}}  {'target':<11}met?")
    for r in rows:
        met = "-" if r["pass"] is None else verdict(r["pass"])
        say(f"   {r['measure']:<{width}}{r['shown']:>{value_width}}  {r['target']:<11}{met}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20 tests, 2 rounds, 3 start-up rounds: shows the script works",
    )
    parser.add_argument("--tests", type=int, default=None, help="tests in the suite (default 300)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="suite rounds, each timing floor, fresh and warm once (default 5)",
    )
    parser.add_argument(
        "--startup-rounds",
        type=int,
        default=None,
        help="start-up rounds, each timing with and without once (default 15)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write the results (default {DEFAULT_JSON})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the generated projects go (default: a temp dir, removed)",
    )
    args = parser.parse_args(argv)
    for name in ("tests", "rounds", "startup_rounds"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= 100_000:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and 100000, got {value}")
    return args


def config(args: argparse.Namespace) -> Config:
    quick = bool(args.quick)
    return Config(
        quick=quick,
        tests=args.tests or (20 if quick else 300),
        rounds=args.rounds or (2 if quick else 5),
        startup_tests=200,
        startup_rounds=args.startup_rounds or (3 if quick else 15),
        warmup=not quick,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config(args)
    started = time.perf_counter()
    info = machine()
    say(
        f"{TABLE_HEADER} ({'quick' if cfg.quick else 'full'} run, "
        f"{datetime.now().isoformat(timespec='seconds')})"
    )
    say(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['implementation']} {info['python']}, "
        f"load {' '.join(info['loadavg_at_start'])}"
    )
    say("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="llm-cache-suite-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": info,
        "quick": cfg.quick,
        "config": cfg.__dict__,
        "started": datetime.now(timezone.utc).isoformat(),
        "bytecode": {
            "pycache_prefix": str(workdir / "pycache"),
            "PYTHONDONTWRITEBYTECODE_here": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        },
    }
    say(f"bytecode: cached in {workdir / 'pycache'} (PYTHONPYCACHEPREFIX) for every run")
    say()
    try:
        for name, run in (("suite", section_suite), ("startup", section_startup)):
            t0 = time.perf_counter()
            note(f"section {name} ...")
            results[name] = run(cfg, workdir)
            results[name]["section_seconds"] = time.perf_counter() - t0
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_suite(results["suite"])
    say()
    print_startup(results["startup"])
    say()
    results["targets"] = targets(results)
    say("Targets (medians of this run)")
    print_targets(results["targets"])
    results["seconds"] = time.perf_counter() - started
    results["machine"]["loadavg_at_end"] = loadavg()
    say(
        f"\ntotal {results['seconds']:.0f} s, load at end {' '.join(results['machine']['loadavg_at_end'])}; "
        f"JSON: {args.json}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
