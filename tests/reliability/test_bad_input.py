"""Every bad input gets a usage error naming the expected form, never a traceback.

The plugin's options and ini values are checked when pytest configures, before any test
runs: ``pytest.UsageError``, exit status 4, one ``ERROR:`` line. The ``llm-cache``
command exits 2 on bad usage and 1 on a problem it found (a store it cannot reach, files
it may not remove), with a message and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import Project

from llm_cache.cassette import Entry, encode_body
from llm_cache.key import KeyRules, make_key
from llm_cache.stores.files import FileStore

SCRIPT = shutil.which("llm-cache", path=os.path.dirname(sys.executable)) or "llm-cache"
USES_CACHE = "def test_it(llm_cache):\n    pass\n"
HUGE = "9" * 400


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """Makes a read-only view of a directory: chmod where that binds the user; as root
    (whom chmod does not stop) a read-only bind mount, or a skip when there is none."""
    undo: list[Callable[[], object]] = []

    def make(directory: Path) -> Path:
        if os.geteuid() != 0:
            for path in [directory, *directory.rglob("*")]:
                if path.is_dir():
                    mode = path.stat().st_mode
                    path.chmod(stat.S_IMODE(mode) & ~0o222)
                    undo.append(lambda path=path, mode=mode: path.chmod(mode))
            return directory
        view = directory.with_name(directory.name + "-ro")
        view.mkdir()
        for command in (["mount", "--bind", str(directory), str(view)],
                        ["mount", "-o", "remount,bind,ro", str(view)]):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", str(view)], capture_output=True, check=False)
                pytest.skip(f"running as root, and no read-only bind mount here: {done.stderr.strip()}")
            if command[1] == "--bind":
                undo.append(lambda: subprocess.run(["umount", str(view)], capture_output=True, check=False))
        return view

    yield make
    for step in reversed(undo):
        with contextlib.suppress(OSError):
            step()


# -- the plugin --------------------------------------------------------------------------------

# (id, command-line arguments, ini lines, the ERROR line); {file} and {dir} name a file and a
# directory of the project
PLUGIN_CASES = [
    ("ttl-overflow", ["--llm-cache-ttl=99999999999d"], None,
     "--llm-cache-ttl must be a duration of at most 36500d (100 years), or 'never', got '99999999999d'"),
    ("ttl-ini-overflow", [], f"llm_cache_ttl = {HUGE}s", "llm_cache_ttl must be a duration of at most 36500d *"),
    ("store-ipv6-unclosed", ["--llm-cache-store=redis://[::1/0"], None,
     ("--llm-cache-store must be a store URL: file://PATH, memory://, redis://host:port/db or redis+cluster://host:port,host:port/ (Invalid IPv6 URL),"
     " got 'redis://[[]::1/0'")),
    ("store-ipv6-password-hidden", ["--llm-cache-store=redis://:hunter2@[::1/0"], None,
     "--llm-cache-store must be a store URL: * (Invalid IPv6 URL), got 'redis://***@[[]::1/0'"),
    ("store-port", ["--llm-cache-store=redis://localhost:99999/0"], None,
     "--llm-cache-store must be a Redis URL (Port out of range 0-65535), got 'redis://localhost:99999/0'"),
    ("store-grace-overflow", ["--llm-cache-store=redis://localhost:1/0?grace=99999999999d"], None,
     "--llm-cache-store grace must be a duration of at most 36500d *"),
    ("store-memory-size-overflow", [f"--llm-cache-store=memory://?max_bytes={HUGE}TB"], None,
     "--llm-cache-store max_bytes must be a size from 1 byte to 1EiB, got '9999*TB'"),
    ("store-file-is-a-file", ["--llm-cache-store=file://{file}"], None,
     "--llm-cache-store must be file://PATH where PATH is a directory or can be one (it names a file), got *"),
    ("store-file-nul", ["--llm-cache-store=file:///tmp/a%00b"], None, "--llm-cache-store must be a store URL: *"),
    ("dir-is-a-file", ["--llm-cache-dir={file}"], None,
     "--llm-cache-dir must be a directory, or a path where one can be made (it names a file), got '*/notes.txt'"),
    ("dir-under-a-file", ["--llm-cache-dir={file}/cassettes"], None,
     ("--llm-cache-dir must be a directory, or a path where one can be made (*/notes.txt is a file),"
     " got '*/notes.txt/cassettes'")),
    ("dir-ini-is-a-file", [], "llm_cache_dir = notes.txt", "llm_cache_dir must be a directory, *(it names a file)*"),
    ("dir-name-too-long", ["--llm-cache-dir=" + "d" * 300], None,
     "--llm-cache-dir must be a directory, or a path where one can be made (File name too long), got *"),
    ("report-is-a-directory", ["--llm-cache-report={dir}"], None,
     "--llm-cache-report must be a path where a JSON file can be written (it names a directory), got '*/sub'"),
    ("report-under-a-file", ["--llm-cache-report={file}/report.json"], None,
     "--llm-cache-report must be a path where a JSON file can be written (*/notes.txt is a file), got *"),
    ("report-ini-is-a-directory", [], "llm_cache_report = sub", "llm_cache_report must be a path where *(it names a directory)*"),
    ("report-name-too-long", ["--llm-cache-report=" + "r" * 300], None,
     "--llm-cache-report must be a path where a JSON file can be written (File name too long), got *"),
    ("max-size-overflow", [f"--llm-cache-max-size={HUGE}TB"], None,
     "--llm-cache-max-size must be a size from 1 byte to 1EiB, got '9999*TB'"),
    ("max-size-below-a-byte", ["--llm-cache-max-size=0.5b"], None,
     "--llm-cache-max-size must be a size from 1 byte to 1EiB, got '0.5b'"),
    ("max-entries-superscript", ["--llm-cache-max-entries=\u00b2"], None,
     "--llm-cache-max-entries must be a whole number above 0, like 1000, got '\u00b2'"),
    ("max-entries-thousands-of-digits", ["--llm-cache-max-entries=" + "9" * 5000], None,
     "--llm-cache-max-entries must be a whole number from 1 to 10**15, got '9999*'"),
    ("memory-entries-huge", ["--llm-cache-memory-entries=" + "9" * 30], None,
     "--llm-cache-memory-entries must be a whole number from 1 to 10**15, got *"),
    ("log-every-superscript", [], "llm_cache_log_every = \u00b3", "llm_cache_log_every must be a whole number above 0*"),
    ("allowlist-repeat-overflow", [], "llm_cache_secret_allowlist =\n    a{99999999999}",
     "llm_cache_secret_allowlist must be a regular expression (the repetition number is too large), got 'a{99999999999}'"),
    ("lock-timeout-nan", [], "llm_cache_lock_timeout = nan",
     "llm_cache_lock_timeout must be a number of seconds from 0 to 86400 (a day), got 'nan'"),
    ("lock-timeout-overflow", [], "llm_cache_lock_timeout = 1e400",
     "llm_cache_lock_timeout must be a number of seconds from 0 to 86400 (a day), got '1e400'"),
    ("prices-nan", [], "llm_cache_prices =\n    gpt-4o = nan, 1",
     "llm_cache_prices must be lines 'model = input, output' in dollars per million tokens*, got 'gpt-4o = nan, 1'"),
    ("cassette-size-overflow", [], f"llm_cache_max_cassette_size = {HUGE}GB",
     "llm_cache_max_cassette_size must be a size from 1 byte to 1EiB, got *"),
]


@pytest.mark.parametrize(("args", "ini", "message"), [case[1:] for case in PLUGIN_CASES],
                         ids=[case[0] for case in PLUGIN_CASES])
def test_a_bad_option_or_ini_value_is_a_usage_error_before_any_test(
    project: Project, args: list[str], ini: str | None, message: str
) -> None:
    root = project.pytester.path
    (root / "notes.txt").write_text("not a directory\n")
    (root / "sub").mkdir()
    project.pytester.makepyfile(test_bad=USES_CACHE)
    if ini:
        project.pytester.makeini(f"[pytest]\n{ini}\n")
    given = [a.format(file=root / "notes.txt", dir=root / "sub") for a in args]
    result = project.run(*given)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    assert (root / "notes.txt").read_text() == "not a directory\n"


def test_a_report_where_nothing_can_be_written_is_a_usage_error(
    project: Project, read_only: Callable[[Path], Path]
) -> None:
    """It used to fail the session after the tests passed, with a traceback."""
    shut = read_only(project.pytester.mkdir("shut"))
    project.pytester.makepyfile(test_bad=USES_CACHE)
    result = project.run(f"--llm-cache-report={shut}/report.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        (f"ERROR: --llm-cache-report must be a path where a JSON file can be written (cannot write in {shut}: *),"
        f" got '{shut}/report.json'")
    ])
    result.stdout.no_fnmatch_line("*passed*")


def test_a_good_report_path_and_cassette_dir_still_pass(project: Project) -> None:
    (project.pytester.path / "existing.json").write_text("{}")
    project.pytester.makepyfile(test_ok=USES_CACHE)
    project.run("--llm-cache-report=existing.json", "--llm-cache-dir=new/nested/cassettes").assert_outcomes(passed=1)
    project.run("--llm-cache-report=out/deeper/report.json").assert_outcomes(passed=1)
    assert (project.pytester.path / "out/deeper/report.json").is_file()


# -- the command line --------------------------------------------------------------------------


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def _holds(line: str, message: str) -> bool:
    """``line`` holds the pieces of ``message`` between its ``*``, in order."""
    at = 0
    for piece in message.split("*"):
        found = line.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


REQUEST = "- url: http://127.0.0.1:9/v1/chat/completions\n  json: {model: gpt-4o, messages: [{role: user, content: hi}]}\n"

# (id, arguments, files to write (name -> bytes), exit status, a line the message holds)
CLI_CASES: list[tuple[str, list[str], dict[str, bytes], int, str]] = [
    ("ls-ttl-overflow", ["ls", "--ttl", "99999999999d"], {}, 2,
     "llm-cache ls: error: --ttl must be a duration of at most 36500d (100 years), or 'never', got '99999999999d'"),
    ("stats-ttl-overflow", ["stats", "--ttl", HUGE + "w"], {}, 2, "llm-cache stats: error: --ttl must be a duration of at most"),
    ("prune-unused-overflow", ["prune", "--unused-since", "99999999999d"], {}, 2,
     "llm-cache prune: error: --unused-since must be a duration of at most 36500d"),
    ("prune-size-overflow", ["prune", "--max-size", HUGE + "TB"], {}, 2,
     "llm-cache prune: error: --max-size must be a size from 1 byte to 1EiB"),
    ("prune-entries-digits", ["prune", "--max-entries", "9" * 5000], {}, 2,
     "llm-cache prune: error: --max-entries must be a whole number from 1 to 10**15"),
    ("verify-allow-unclosed", ["verify", "--allow", "([unclosed"], {}, 2,
     ("llm-cache verify: error: --allow must be a regular expression (unterminated character set at position 1),"
     " got '([unclosed'")),
    ("verify-allow-overflow", ["verify", "--allow", "a{99999999999}"], {}, 2,
     "llm-cache verify: error: --allow must be a regular expression (the repetition number is too large)"),
    ("warm-malformed-yaml", ["warm", "{dir}/requests.yaml"], {"requests.yaml": b"- {url: [unclosed\n"}, 2,
     ("requests.yaml must be a list of requests {url or path, json, method, headers}, in YAML or JSONL (one a line),"
     " got \"invalid YAML (line 2, column 1: expected ',' or ']', but got '<stream end>')\"")),
    ("warm-malformed-jsonl", ["warm", "{dir}/requests.jsonl"],
     {"requests.jsonl": b'{"path": "/v1/embeddings", "json": {}}\n{"path": "/v1/x"\n'}, 2,
     "requests.jsonl line 2 must be one JSON object a line (Expecting ',' delimiter: *"),
    ("warm-binary-file", ["warm", "{dir}/requests.yaml"], {"requests.yaml": bytes(range(128, 256)) * 4}, 2,
     "requests.yaml must be a list of requests *, got 'bytes that are not UTF-8 text (at byte 0)'"),
    ("warm-a-mapping", ["warm", "{dir}/requests.yaml"], {"requests.yaml": b"path: /v1/x\n"}, 2,
     "requests.yaml must be a list of requests *, got 'dict'"),
    ("warm-method-int", ["warm", "{dir}/requests.yaml"], {"requests.yaml": b"- {path: /v1/x, method: 123}\n"}, 2,
     "requests.yaml request 1 method must be an HTTP method like POST or GET, got 123"),
    ("warm-headers-list", ["warm", "{dir}/requests.yaml"], {"requests.yaml": b"- {path: /v1/x, headers: [a]}\n"}, 2,
     "requests.yaml request 1 headers must be a mapping of header names to strings, got ['a']"),
    ("warm-no-url", ["warm", "{dir}/requests.yaml"], {"requests.yaml": b"- {json: {model: gpt-4o}}\n"}, 2,
     "requests.yaml request 1 must be a mapping with url, or path (with --base-url)*"),
    ("warm-path-without-base-url", ["warm", "{dir}/requests.yaml"],
     {"requests.yaml": b"- {url: http://127.0.0.1:1/v1/x}\n- {path: /v1/chat/completions, json: {}}\n"}, 2,
     "llm-cache warm: error: *requests.yaml request 2 path must be a full url, or given with --base-url *"
     ", got '/v1/chat/completions'"),
    ("ls-unknown-flag", ["ls", "--bogus"], {}, 2, "llm-cache ls: error: unrecognized arguments: --bogus"),
    ("prune-unknown-flag-usage", ["prune", "--expired", "--frob"], {}, 2, "usage: llm-cache prune [-h] [--dir DIR]"),
    ("warm-unknown-field", ["warm", "{dir}/requests.yaml"], {"requests.yaml": b"- {path: /v1/x, jsno: {}}\n"}, 2,
     "requests.yaml request 1 field 'jsno' must be one of the fields url, path, json, method, headers, got {}"),
    ("warm-store-unreachable", ["warm", "{dir}/requests.yaml", "--store", "redis://127.0.0.1:1/0?timeout=0.5"],
     {"requests.yaml": REQUEST.encode()}, 1,
     "llm-cache warm: cache store redis://127.0.0.1:1/0* is unavailable within 0.5 s: *"),
    ("warm-store-ipv6-unclosed", ["warm", "{dir}/requests.yaml", "--store", "redis://[::1/0"],
     {"requests.yaml": REQUEST.encode()}, 2,
     "llm-cache warm: error: --store must be a store URL: * (Invalid IPv6 URL), got 'redis://[::1/0'"),
    ("warm-store-port", ["warm", "{dir}/requests.yaml", "--store", "redis://localhost:99999/0"],
     {"requests.yaml": REQUEST.encode()}, 2, "llm-cache warm: error: --store must be a Redis URL (Port out of range*"),
    ("warm-store-timeout", ["warm", "{dir}/requests.yaml", "--store", "redis://localhost/0?timeout=never"],
     {"requests.yaml": REQUEST.encode()}, 2, "llm-cache warm: error: --store redis://localhost/0* must be timeout=*"),
    ("warm-ttl-overflow", ["warm", "{dir}/requests.yaml", "--ttl", "99999999999d"],
     {"requests.yaml": REQUEST.encode()}, 2, "llm-cache warm: error: --ttl must be a duration of at most 36500d*"),
    # an unset variable is said, never sent as the text ${...} in place of a key
    ("warm-unset-variable", ["warm", "{dir}/requests.yaml"],
     {"requests.yaml": b"- {url: http://127.0.0.1:1/v1/x, headers: {Authorization: 'Bearer ${LLM_CACHE_UNSET_KEY}'}}\n"},
     2, "llm-cache warm: error: *requests.yaml request 1 header Authorization must be a variable set in the "
     "environment (LLM_CACHE_UNSET_KEY is not set), got '${LLM_CACHE_UNSET_KEY}'"),
    ("warm-unset-variable-flag", ["warm", "{dir}/requests.yaml", "--header", "x-api-key: ${LLM_CACHE_UNSET_KEY}"],
     {"requests.yaml": REQUEST.encode()}, 2,
     "llm-cache warm: error: *requests.yaml request 1 header x-api-key must be a variable set in the environment*"),
    ("warm-mode", ["warm", "{dir}/requests.yaml", "--mode", "sometimes"],
     {"requests.yaml": REQUEST.encode()}, 2, "llm-cache warm: error: --mode must be one of replay|record|refresh|off*"),
]


@pytest.mark.parametrize(("args", "files", "status", "message"), [case[1:] for case in CLI_CASES],
                         ids=[case[0] for case in CLI_CASES])
def test_a_bad_command_line_exits_with_a_message_and_no_traceback(
    tmp_path: Path, args: list[str], files: dict[str, bytes], status: int, message: str
) -> None:
    (tmp_path / "cassettes").mkdir()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = run(*[a.replace("{dir}", str(tmp_path)) for a in args], cwd=tmp_path)
    assert out.returncode == status, out.stderr
    assert "Traceback" not in out.stderr
    assert any(_holds(line, message) for line in out.stderr.splitlines()), out.stderr
    if args[0] == "warm":
        assert "--llm-cache-" not in out.stderr  # the command's own flags are named
        assert not list((tmp_path / "cassettes").rglob("*.yaml"))  # nothing was sent


def test_prune_on_a_read_only_directory_says_what_it_could_not_remove(
    tmp_path: Path, read_only: Callable[[Path], Path]
) -> None:
    root = tmp_path / "cassettes"
    store = FileStore(root)
    for prompt in ("first", "second"):
        store.put(_entry(prompt))
    shut = read_only(root)
    copied = sorted(p.name for p in shut.rglob("*.yaml"))
    assert len(copied) == 2
    out = run("prune", "--model", "gpt-4o", "--dir", str(shut))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith(f"could not remove {shut}/gpt-4o/") for line in lines) == 2
    assert lines[-1] == "removed 0 of 2 cassettes, 0 bytes; 2 could not be removed"
    # each file with its cause; what to do said once, in the command's terms (not the plugin's flags)
    cause = "the file system is read-only (EROFS)" if os.geteuid() == 0 else "permission denied (EACCES)"
    assert all(line.endswith(f": {cause}") for line in lines if line.startswith("could")), lines
    assert sum(line.startswith("Fix: ") for line in lines) == 1
    assert "--llm-cache" not in out.stdout + out.stderr
    assert sorted(p.name for p in shut.rglob("*.yaml")) == copied


def _entry(prompt: str) -> Entry:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}).encode()
    rk = make_key("POST", "https://api.example.test/v1/chat/completions", body, {}, KeyRules())
    answer = {"model": "gpt-4o-2024-08-06", "choices": [{"index": 0, "message": {"role": "assistant", "content": "a"}}]}
    return Entry(
        key=rk.key, recorded_at=datetime.now(timezone.utc), model="gpt-4o", model_version=rk.model_version,
        method="POST", path=rk.path, query=[], request_headers={"content-type": "application/json"},
        request_body=encode_body(body, "application/json"), status=200, response_headers={},
        response_body=encode_body(json.dumps(answer).encode(), "application/json"),
    )


# -- inputs taken as given: percent-encoded file URLs, the umask -----------------------------------

RECORD = "from conftest import chat\ndef test_it(client, llm_cache):\n    chat(client, 'where')\n"


def test_a_file_url_is_percent_decoded(project: Project) -> None:
    target = project.pytester.path / "my dir"
    project.pytester.makepyfile(test_url=RECORD)
    url = "file://" + str(target).replace(" ", "%20")
    project.run("--llm-cache=record", f"--llm-cache-store={url}").assert_outcomes(passed=1)
    assert len(list(target.rglob("*.yaml"))) == 1
    assert not (project.pytester.path / "my%20dir").exists()


@pytest.mark.parametrize("path", ["C:\\cache\\llm", "D:/cache/llm", "c:\\x"])
def test_a_windows_drive_path_is_a_file_store_not_a_url(tmp_path: Path, path: str) -> None:
    from llm_cache.stores import FileStore, open_store

    store = open_store(path, tmp_path)  # not a URL of scheme "c": the path as Windows reads it
    assert isinstance(store, FileStore) and store.root == tmp_path / path


def test_a_file_url_with_a_drive_is_that_drive_on_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llm_cache.stores import FileStore, open_store

    monkeypatch.setattr("sys.platform", "win32")
    store = open_store("file:///C:/cache", tmp_path)  # RFC 8089: the path is C:/cache, not /C:/cache
    assert isinstance(store, FileStore) and store.root == tmp_path / "C:/cache"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_cassettes_are_written_as_the_umask_says(project: Project, umask: int, mode: int) -> None:
    """They used to be 0600 whatever the umask (tempfile.mkstemp), so a team sharing a
    cassette directory through its group could not read what each other recorded."""
    project.pytester.makepyfile(test_mode=RECORD)
    before = os.umask(umask)
    try:
        project.run("--llm-cache=record").assert_outcomes(passed=1)
    finally:
        os.umask(before)
    [cassette] = project.files()
    assert stat.S_IMODE(cassette.stat().st_mode) == mode
