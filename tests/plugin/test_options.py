"""Options, ini and environment: precedence, and bad values as UsageError naming the expected form."""

from __future__ import annotations

import pytest

from conftest import Project

MODE_PROBE = """
import pytest
def test_probe(llm_cache, save):
    save("mode", llm_cache.mode.value)
@pytest.mark.llm_cache(mode="refresh")
def test_marked(llm_cache, save):
    save("marked_mode", llm_cache.mode.value)
@pytest.mark.llm_cache(mode="off")
def test_off(llm_cache, save):
    save("off_mode", llm_cache.mode.value)
"""


@pytest.mark.parametrize(
    ("ini", "env", "cli", "plain", "marked"),
    [
        (None, None, None, "replay", "refresh"),  # default; marker beats it
        ("record", None, None, "record", "refresh"),  # ini; marker beats ini
        ("record", "off", None, "off", "refresh"),  # environment beats ini; marker beats environment
        ("record", "off", "replay", "replay", "replay"),  # command line beats everything
    ],
)
def test_mode_precedence(
    project: Project, monkeypatch: pytest.MonkeyPatch, ini: str | None, env: str | None, cli: str | None,
    plain: str, marked: str,
) -> None:
    project.pytester.makepyfile(test_probe=MODE_PROBE)
    if ini:
        project.pytester.makeini(f"[pytest]\nllm_cache_mode = {ini}\n")
    if env:
        monkeypatch.setenv("LLM_CACHE_MODE", env)
    project.run(*([f"--llm-cache={cli}"] if cli else [])).assert_outcomes(passed=3)
    assert (project.result("mode"), project.result("marked_mode")) == (plain, marked)
    # but a marker's off is never overridden: the test said its calls are not the cache's
    assert project.result("off_mode") == "off"


def test_a_test_marked_off_is_neither_recorded_nor_replayed_whatever_the_command_line(project: Project) -> None:
    project.pytester.makepyfile(test_live=(
        "import pytest\nfrom conftest import chat\n"
        "@pytest.mark.llm_cache(mode='off')\ndef test_live(client, llm_cache):\n    chat(client, 'always live')\n"
    ))
    for mode in ("record", "refresh", "replay"):
        project.run(f"--llm-cache={mode}").assert_outcomes(passed=1)
    assert project.files() == []
    assert project.server.count() == 3  # each run went to the API


def test_cassette_dir_from_option_and_ini(project: Project) -> None:
    project.pytester.makepyfile(test_d="from conftest import chat\ndef test_it(client, llm_cache):\n    chat(client, 'where')\n")
    project.pytester.makeini("[pytest]\nllm_cache_dir = from_ini\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert len(list((project.pytester.path / "from_ini").rglob("*.yaml"))) == 1
    project.run("--llm-cache=record", "--llm-cache-dir=from_cli").assert_outcomes(passed=1)
    assert len(list((project.pytester.path / "from_cli").rglob("*.yaml"))) == 1


@pytest.mark.parametrize(
    ("args", "ini", "env", "message"),
    [
        (["--llm-cache=recrod"], None, None, "--llm-cache must be one of replay|record|refresh|off, got 'recrod'"),
        ([], "llm_cache_mode = sometimes", None, "llm_cache_mode must be one of replay|record|refresh|off, got 'sometimes'"),
        ([], None, "loud", "LLM_CACHE_MODE must be one of replay|record|refresh|off, got 'loud'"),
        (["--llm-cache-ttl=soon"], None, None,
         "--llm-cache-ttl must be a duration like 90s, 30m, 12h, 30d or 2w, or 'never', got 'soon'"),
        (["--llm-cache-ttl=-3d"], None, None, "--llm-cache-ttl must be a duration like *, got '-3d'"),
        ([], "llm_cache_ttl = 10 years", None, "llm_cache_ttl must be a duration like *, got '10 years'"),
        ([], "llm_cache_match_host = maybe", None, "llm_cache_match_host must be true or false, got 'maybe'"),
        (["--llm-cache-max-size=huge"], None, None,
         "--llm-cache-max-size must be a size like 500KB, 50MB or 1GB (KB = 1000 bytes, KiB = 1024), got 'huge'"),
        ([], "llm_cache_max_size = 10 parsecs", None, "llm_cache_max_size must be a size like *, got '10 parsecs'"),
        (["--llm-cache-max-entries=0"], None, None, "--llm-cache-max-entries must be a whole number above 0, like 1000, got '0'"),
        (["--llm-cache-eviction=random"], None, None, "--llm-cache-eviction must be one of lru|lfu|fifo, got 'random'"),
        ([], "llm_cache_eviction = mru", None, "llm_cache_eviction must be one of lru|lfu|fifo, got 'mru'"),
        ([], "llm_cache_model_versions =\n    gpt-4o 2024", None,
         "llm_cache_model_versions must be lines 'alias = version', e.g. gpt-4o = 2024-08-06, got 'gpt-4o 2024'"),
        ([], "llm_cache_replay_timing = sometimes", None,
         "llm_cache_replay_timing must be one of none|recorded, got 'sometimes'"),
        ([], "llm_cache_lock_timeout = soon", None,
         "llm_cache_lock_timeout must be a number of seconds or a duration like 30s or 2m, got 'soon'"),
        (["--llm-cache-ttl=99999999999d"], None, None,
         "--llm-cache-ttl must be a duration of at most 36500d (100 years), or 'never', got '99999999999d'"),
        ([], "llm_cache_max_cassette_size = roomy", None,
         "llm_cache_max_cassette_size must be a size like 500KB, 50MB or 1GB (KB = 1000 bytes, KiB = 1024), got 'roomy'"),
        (["--llm-cache-store=redis://[::1/0"], None, None, "--llm-cache-store must be a store URL: *(Invalid IPv6 URL)*"),
        # redis-py would take it and fail at the first command (an INTERNALERROR), or show the password
        (["--llm-cache-store=redis://127.0.0.1:1/0?bogus=1"], None, None,
         "--llm-cache-store must be a Redis URL whose query parameters redis-py takes (it does not take 'bogus'), *"),
        ([], "llm_cache_store = redis://:Pa#ss99secret@127.0.0.1:1/0", None,
         "llm_cache_store must be a Redis URL, redis://*percent-encode*got 'redis://:***@127.0.0.1:1/0'"),
        (["--llm-cache-store=file://c?ttl=1d"], None, None,
         "--llm-cache-store must be file://PATH with no parameters (got ttl); a TTL is --llm-cache-ttl *"),
        (["--llm-cache-dir=conftest.py"], None, None, "--llm-cache-dir must be a directory, *(it names a file)*"),
        (["--llm-cache-report=."], None, None, "--llm-cache-report must be a path where *(it names a directory)*"),
    ],
)
def test_bad_values_are_usage_errors(
    project: Project, monkeypatch: pytest.MonkeyPatch, args: list[str], ini: str | None, env: str | None, message: str
) -> None:
    project.pytester.makepyfile(test_bad="def test_it(llm_cache):\n    pass\n")
    if ini:
        project.pytester.makeini(f"[pytest]\n{ini}\n")
    if env:
        monkeypatch.setenv("LLM_CACHE_MODE", env)
    result = project.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('tll="1d"', "@pytest.mark.llm_cache argument must be one of the arguments mode, ttl, model_version, ignore_fields, sequence (did you mean ttl?), got 'tll'"),
        ('"record"', "@pytest.mark.llm_cache must be keyword arguments only: *"),
        ('mode="sometimes"', "@pytest.mark.llm_cache(mode=...) must be one of replay|record|refresh|off, got 'sometimes'"),
        ('ttl="soon"', "@pytest.mark.llm_cache(ttl=...) must be a duration like *"),
        ("model_version=3", "@pytest.mark.llm_cache(model_version=...) must be a version label*got 3"),
    ],
)
def test_bad_marker_arguments_fail_the_test_clearly(project: Project, marker: str, message: str) -> None:
    project.pytester.makepyfile(test_bad=f"import pytest\n@pytest.mark.llm_cache({marker})\ndef test_it():\n    pass\n")
    result = project.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])
    out = result.stdout.str()
    assert "During handling of the above exception" not in out  # said once, not chained


def test_marker_is_registered(project: Project) -> None:
    project.pytester.makepyfile(test_reg="import pytest\n@pytest.mark.llm_cache(mode='off')\ndef test_it():\n    pass\n")
    project.run("--strict-markers").assert_outcomes(passed=1)
    result = project.pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.llm_cache(mode=None, ttl=None, model_version=None, ignore_fields=(), sequence=False):*"])


def test_help_lists_the_option_group(project: Project) -> None:
    result = project.pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        ["record and replay LLM API calls:", "  --llm-cache=LLM_CACHE_MODE", "*--llm-cache-ttl=*"]
    )


def test_ignore_fields_from_ini_and_marker(project: Project) -> None:
    project.pytester.makepyfile(
        test_ign="""
import pytest
def _call(client, run_id, trace):
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "same"}],
        extra_body={"run": {"id": run_id}, "trace": trace})
def test_ini(client, llm_cache):
    import uuid
    _call(client, str(uuid.uuid4()), "fixed")
@pytest.mark.llm_cache(ignore_fields=["trace"])
def test_marker(client):
    import uuid
    _call(client, str(uuid.uuid4()), str(uuid.uuid4()))
"""
    )
    project.pytester.makeini("[pytest]\nllm_cache_ignore_fields =\n    run.id\n")
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    project.run().assert_outcomes(passed=2)
    assert project.server.count() == 2


def test_volatile_fields_do_not_change_the_key(project: Project) -> None:
    project.pytester.makepyfile(
        test_vol="""
import uuid
def test_it(client, llm_cache):
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "v"}],
        user=str(uuid.uuid4()), metadata={"run": str(uuid.uuid4())}, store=False,
        extra_body={"safety_identifier": str(uuid.uuid4()), "prompt_cache_key": str(uuid.uuid4())})
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    project.run().assert_outcomes(passed=1)
    assert project.server.count() == 1


def test_match_host(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.pytester.makepyfile(test_host="from conftest import chat\ndef test_it(client, llm_cache):\n    chat(client, 'host')\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    monkeypatch.setenv("FAKE_LLM_URL", project.server.url.replace("127.0.0.1", "localhost"))
    project.run().assert_outcomes(passed=1)  # host left out by default
    project.pytester.makeini("[pytest]\nllm_cache_match_host = true\n")
    project.run().assert_outcomes(failed=1)
