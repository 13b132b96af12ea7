"""The llm-cache command on any store: a file store (``--dir``) and a Redis store (``--store``,
a real redis-server) holding the same recorded entries give the same answers.

Without a redis-server the Redis cases skip, unless ``LLM_CACHE_REQUIRE_REDIS=1`` (then they fail).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, RedisTarget, require_redis_server
from test_cli import NOW, chat_entry, run

from llm_cache.cassette import dump_entry
from llm_cache.key import KeyRules
from llm_cache.meta import EntryMeta
from llm_cache.report.json import report_json
from llm_cache.report.model import Report, Unused
from llm_cache.stats import SessionStats
from llm_cache.stores.files import FileStore
from llm_cache.usage import Usage

ENTRIES = {
    "old": chat_entry("an old question about shipping", "old answer", days_old=40),
    "new": chat_entry("a new question about refunds", "new answer"),
    "stream": chat_entry("stream the weather please", "it is sunny today", stream=True, tool=True, days_old=0.3),
    "mini": chat_entry("small model question", "tiny answer", model="gpt-4o-mini", days_old=10),
    "pinned": chat_entry("pinned", "p", rules=KeyRules(pinned_version="2024-08-06"), days_old=1),
    "ignored": chat_entry("with ignore rule", "i", rules=KeyRules(ignore_fields=("messages.0",)), days_old=0.2),
}
# no two recorded at the same time: an eviction order with ties would be the store's listing order
USED = {ENTRIES["new"].key: Usage(NOW.timestamp(), 7), ENTRIES["mini"].key: Usage(NOW.timestamp(), 2)}


@dataclass
class Subject:
    """A store holding ENTRIES, and the flags that name it to the command."""

    name: str
    store: Any
    args: list[str]

    def keys(self) -> set[str]:
        return {m.key for m in self.store.scan()}

    def metas(self, *names: str) -> list[EntryMeta]:
        wanted = {ENTRIES[n].key for n in names}
        return [m for m in self.store.scan() if m.key in wanted]


def _filled(store: Any) -> Any:
    for entry in ENTRIES.values():
        store.put(entry)
    store.touch(USED)
    return store


def _file_subject(tmp_path: Path) -> Subject:
    store = _filled(FileStore(tmp_path / "cassettes"))
    return Subject("file", store, ["--dir", str(store.root)])


def _redis_subject(target: RedisTarget) -> Subject:
    return Subject("redis", _filled(target.store()), ["--store", target.store_url])


@pytest.fixture(params=["file", "redis"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    if request.param == "file":
        return _file_subject(tmp_path)
    return _redis_subject(request.getfixturevalue("redis_target"))


@pytest.fixture
def both(tmp_path: Path, redis_target: RedisTarget) -> tuple[Subject, Subject]:
    return _file_subject(tmp_path), _redis_subject(redis_target)


def cli(subject: Subject, *args: str) -> Any:
    out = run(*args, *subject.args)
    assert out.returncode == 0, (subject.name, out.stdout, out.stderr)
    return json.loads(out.stdout) if "--json" in args else out.stdout


# Fields that name where an entry is (a path, a Redis key), or when the command ran.
WHERE = {"path", "store", "a", "b", "taken_at", "created_at", "age_seconds"}


def comparable(data: Any) -> Any:
    """``data`` less what differs between two stores holding the same entries."""
    if isinstance(data, dict):
        return {k: comparable(v) for k, v in data.items() if k not in WHERE}
    if isinstance(data, list):
        items = [comparable(v) for v in data]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True)) if all(isinstance(v, dict) for v in items) else items
    return data


# -- each store on its own -------------------------------------------------------------------


def test_ls(subject: Subject) -> None:
    lines = cli(subject, "ls").splitlines()
    assert lines[0].split() == ["KEY", "MODEL", "VERSION", "RECORDED", "AGE", "EXPIRED", "SIZE", "ENDPOINT", "PROMPT"]
    old = next(line for line in lines if line.startswith(ENTRIES["old"].key[:12]))
    assert "40d" in old and " yes " in old and "an old question about shipping" in old
    data = cli(subject, "ls", "--json")
    assert {d["key"] for d in data} == {e.key for e in ENTRIES.values()}
    assert {d["size"] for d in data if d["key"] == ENTRIES["new"].key} == {len(dump_entry(ENTRIES["new"]).encode())}
    assert sum(d["expired"] for d in cli(subject, "ls", "--json", "--ttl", "5d")) == 2


def test_stats(subject: Subject) -> None:
    data = cli(subject, "stats", "--json")
    gpt4o = data["model_versions"]["gpt-4o"]
    assert (gpt4o["entries"], gpt4o["expired"], gpt4o["hits"]) == (4, 1, 7)
    assert data["model_versions"]["gpt-4o-mini"]["hits"] == 2
    assert data["total"]["entries"] == 6
    assert data["total"]["bytes"] == sum(len(dump_entry(e).encode()) for e in ENTRIES.values())
    text = cli(subject, "stats")
    assert any(line.split()[:2] == ["total", "6"] for line in text.splitlines())


def test_show_and_diff_by_key_prefix(subject: Subject) -> None:
    out = cli(subject, "show", ENTRIES["stream"].key[:8])
    assert "  [user] stream the weather please" in out
    assert '  get_weather({"city": "Paris"})' in out
    data = cli(subject, "show", ENTRIES["new"].key[:10], "--json")
    assert data["completion"] == "new answer" and data["key"] == ENTRIES["new"].key
    assert data["path"] == subject.store.location(ENTRIES["new"].key, ENTRIES["new"].model_version)
    diff = cli(subject, "diff", ENTRIES["old"].key[:10], ENTRIES["new"].key[:10])
    assert 'response.json.choices[0].message.content: "old answer" -> "new answer"' in diff
    missing = run("show", "ffffffff", *subject.args)
    assert missing.returncode == 1 and "no cassette whose key starts with ffffffff" in missing.stderr


def test_show_an_ambiguous_prefix(subject: Subject) -> None:
    a, b = chat_entry("twin a", "a"), chat_entry("twin b", "b")
    b.key = ENTRIES["new"].key[:6] + b.key[6:]
    a.key = ENTRIES["new"].key[:6] + a.key[6:]
    subject.store.put(a)
    subject.store.put(b)
    out = run("show", a.key[:6], *subject.args)
    assert out.returncode == 2 and "ambiguous: 3 cassettes" in out.stderr


def test_verify_sound(subject: Subject) -> None:
    assert cli(subject, "verify").splitlines()[-1] == "6 cassettes checked, all sound"
    data = cli(subject, "verify", "--json")
    assert data["checked"] == 6 and data["problems"] == []


def test_prune_expired_dry_run_then_for_real(subject: Subject) -> None:
    dry = cli(subject, "prune", "--expired", "--dry-run")
    where = subject.store.location(ENTRIES["old"].key, ENTRIES["old"].model_version)
    assert f"would remove {where} (expired (older than 30d))" in dry
    assert "would remove 1 of 6 cassettes" in dry
    assert len(subject.keys()) == 6
    assert "removed 1 of 6 cassettes" in cli(subject, "prune", "--expired")
    assert subject.keys() == {e.key for n, e in ENTRIES.items() if n != "old"}


def test_prune_by_model_unused_and_caps(subject: Subject) -> None:
    removed = cli(subject, "prune", "--model", "gpt-4o-mini", "--json")["removed"]
    assert [r["key"] for r in removed] == [ENTRIES["mini"].key]
    removed = cli(subject, "prune", "--unused-since", "2d", "--json")["removed"]
    assert [r["key"] for r in removed] == [ENTRIES["old"].key]
    removed = cli(subject, "prune", "--max-entries", "2", "--eviction", "fifo", "--json")["removed"]
    assert len(removed) == 2
    assert len(subject.keys()) == 2
    assert ENTRIES["mini"].key not in subject.store.usage()


def test_report_json_and_html(subject: Subject, tmp_path: Path) -> None:
    data = cli(subject, "report", "--json")
    assert data["entries"] == 6 and data["inventory"]["entries"] == 6 and data["inventory"]["expired"] == 1
    assert {v["model_version"] for v in data["inventory"]["model_versions"]} == {
        "gpt-4o", "gpt-4o-mini", "gpt-4o@2024-08-06"}
    page = tmp_path / "out" / "report.html"
    text = cli(subject, "report", "--html", str(page), "--ttl", "5d")
    assert f"HTML report written to {page}" in text
    assert text.startswith("6 cassettes, ") and " bytes, 2 expired (ttl 5d) in " in text
    assert page.read_text().lstrip().lower().startswith("<!doctype html")


def _unused_report(path: Path, subject: Subject, *names: str, extra: tuple[EntryMeta, ...] = ()) -> Path:
    """A JSON report, as a run writes it, listing the entries ``names`` (and ``extra``) as unused."""
    metas = tuple(subject.metas(*names)) + extra
    report = Report(SessionStats(), "replay", " ".join(subject.args), 6, 0, unused_policy="report",
                    unused=Unused(None, metas))
    path.write_text(json.dumps(report_json(report)))
    return path


def test_prune_unused_in_removes_exactly_what_the_report_listed(subject: Subject, tmp_path: Path) -> None:
    gone = EntryMeta("f" * 64, "gpt-4o", NOW, 10, "somewhere/gone.yaml")
    report = _unused_report(tmp_path / "report.json", subject, "old", "mini", extra=(gone,))
    dry = cli(subject, "prune", "--unused-in", str(report), "--dry-run", "--json")
    assert sorted(r["key"] for r in dry["removed"]) == sorted([ENTRIES["old"].key, ENTRIES["mini"].key])
    assert {r["reason"] for r in dry["removed"]} == {f"unused in {report}"}
    assert dry["gone"] == [{"path": "somewhere/gone.yaml", "key": gone.key, "model_version": "gpt-4o"}]
    assert len(subject.keys()) == 6
    text = cli(subject, "prune", "--unused-in", str(report))
    assert "listed in" in text and "but not in the store (already gone): somewhere/gone.yaml" in text
    assert text.splitlines()[-1] == "removed 2 of 6 cassettes, " + str(
        sum(len(dump_entry(ENTRIES[n]).encode()) for n in ("old", "mini"))) + " bytes; 1 listed cassette already gone"
    assert subject.keys() == {e.key for n, e in ENTRIES.items() if n not in ("old", "mini")}
    # combined with --model: only the listed cassettes of that model
    report = _unused_report(tmp_path / "again.json", subject, "new", "pinned")
    removed = cli(subject, "prune", "--unused-in", str(report), "--model", "gpt-4o@2024-08-06", "--json")["removed"]
    assert [r["key"] for r in removed] == [ENTRIES["pinned"].key]


def test_prune_unused_in_matches_key_and_model_version(subject: Subject, tmp_path: Path) -> None:
    other = EntryMeta(ENTRIES["new"].key, "gpt-4o-mini", NOW, 10, "x")  # its key, another model version
    report = _unused_report(tmp_path / "report.json", subject, extra=(other,))
    data = cli(subject, "prune", "--unused-in", str(report), "--json")
    assert data["removed"] == [] and len(data["gone"]) == 1
    assert len(subject.keys()) == 6


def test_prune_unused_in_a_report_that_cannot_tell_or_is_not_one(subject: Subject, tmp_path: Path) -> None:
    partial = tmp_path / "partial.json"
    report = Report(SessionStats(), "replay", "x", 6, 0, unused_policy="report",
                    unused=Unused("the run was not the whole collection (-k)"))
    partial.write_text(json.dumps(report_json(report)))
    out = run("prune", "--unused-in", str(partial), *subject.args)
    assert out.returncode == 1
    assert "cannot tell which cassettes are unused: the run was not the whole collection (-k)" in out.stderr
    for text in ("[1, 2]", "{not json", json.dumps({"unused": ["a"], "unused_entries": [{"key": 3}]})):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        out = run("prune", "--unused-in", str(bad), *subject.args)
        assert out.returncode == 2, out.stderr
        assert "--unused-in must be a JSON report written by --llm-cache-report" in out.stderr
    folder = run("prune", "--unused-in", str(tmp_path), *subject.args)
    assert folder.returncode == 2 and f"{tmp_path} is a directory" in folder.stderr, folder.stderr
    missing = run("prune", "--unused-in", str(tmp_path / "nope.json"), *subject.args)
    assert missing.returncode == 1 and "no report at" in missing.stderr
    assert len(subject.keys()) == 6


# -- the two stores agree --------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["ls", "--json"], ["ls", "--json", "--ttl", "5d"], ["stats", "--json"], ["verify", "--json"],
    ["prune", "--expired", "--dry-run", "--json"], ["prune", "--unused-since", "2d", "--dry-run", "--json"],
    ["prune", "--max-entries", "3", "--eviction", "lru", "--dry-run", "--json"],
    ["prune", "--max-size", "2KB", "--eviction", "lfu", "--dry-run", "--json"],
    ["report", "--json"],
], ids=lambda c: "-".join(a.lstrip("-") for a in c if a != "--json"))
def test_both_stores_answer_alike(both: tuple[Subject, Subject], command: list[str]) -> None:
    files, redis = both
    a, b = cli(files, *command), cli(redis, *command)
    assert comparable(a) == comparable(b)
    if command[0] == "prune":
        assert a["removed"], "a prune that removes nothing compares nothing"


def test_both_stores_show_diff_and_list_alike(both: tuple[Subject, Subject]) -> None:
    files, redis = both
    for name in ENTRIES:
        key = ENTRIES[name].key[:10]
        assert comparable(cli(files, "show", key, "--json")) == comparable(cli(redis, "show", key, "--json"))
    pair = (ENTRIES["stream"].key[:8], ENTRIES["new"].key[:8])
    assert cli(files, "diff", *pair, "--json")["differences"] == cli(redis, "diff", *pair, "--json")["differences"]
    # the text listings: the same rows (in each store's own order)
    # an age moves on between the two listings (59s to 1m, 1m to 2m, as the clock crosses a minute),
    # and the age column's width with it ("59s" is wider than "1m"): the gaps between columns are compared as one

    def rows(subject: Subject) -> list[str]:
        return sorted(
            re.sub(r"  +", "  ", re.sub(r"(?<=  )\d+[smh](?=  )", "N", line))
            for line in cli(subject, "ls").splitlines()
        )

    assert rows(files) == rows(redis)
    assert cli(files, "stats").splitlines()[:-1] == cli(redis, "stats").splitlines()[:-1]
    assert cli(files, "verify") == cli(redis, "verify")


def test_both_stores_prune_the_same(both: tuple[Subject, Subject], tmp_path: Path) -> None:
    files, redis = both
    report = _unused_report(tmp_path / "report.json", files, "stream", "ignored")  # file paths, matched by key
    for args in (["--unused-in", str(report)], ["--expired"], ["--max-entries", "2", "--eviction", "lfu"]):
        a, b = cli(files, "prune", *args, "--json"), cli(redis, "prune", *args, "--json")
        assert comparable(a) == comparable(b) and a["removed"]
        assert files.keys() == redis.keys()
    assert files.keys() == {ENTRIES["new"].key, ENTRIES["mini"].key}  # the most used
    assert sorted(files.store.usage()) == sorted(redis.store.usage())


# -- Redis: what verify finds, a URL's password, misuse ----------------------------------------


def test_verify_on_redis_finds_each_kind_of_problem(redis_target: RedisTarget) -> None:
    subject = _redis_subject(redis_target)
    client = redis_target.client()
    P = redis_target.prefix

    def text(name: str) -> str:
        return dump_entry(ENTRIES[name])

    client.set(P + "e:" + ENTRIES["old"].key, b"{broken")
    client.set(P + "e:" + ENTRIES["new"].key, text("new").replace("a new question about refunds", "a different one"))
    client.set(P + "e:" + ENTRIES["mini"].key, text("mini").replace("tiny answer", "key sk-proj-LEAKEDLEAKED1234567890ab"))
    client.set(P + "e:" + ENTRIES["pinned"].key, text("stream"))  # another entry under its key
    row = client.hget(P + "meta", ENTRIES["ignored"].key).decode()
    client.hset(P + "meta", ENTRIES["ignored"].key, "gpt-4o-mini" + row[len("gpt-4o"):])
    out = run("verify", *subject.args)
    assert out.returncode == 1, out.stderr
    where = {n: subject.store.location(e.key, e.model_version) for n, e in ENTRIES.items()}
    lines = out.stdout.splitlines()
    assert any(line.startswith(where["old"]) and "not valid YAML" in line for line in lines), lines
    assert any(line.startswith(where["new"]) and "its key is not the key of its request" in line for line in lines)
    assert any(line.startswith(where["mini"]) and "looks like an openai or anthropic key (sk-pro...ab)" in line
               for line in lines)
    assert any(line.startswith(where["pinned"]) and "holds the entry of another key" in line for line in lines)
    assert any(line.startswith(where["ignored"]) and "indexed under model version 'gpt-4o-mini'" in line
               for line in lines)
    assert "LEAKED" not in out.stdout
    assert lines[-1] == "6 cassettes checked, 5 with problems"
    allowed = json.loads(run("verify", "--json", "--allow", "sk-proj-LEAKED", *subject.args).stdout)
    assert not any(p["path"] == where["mini"] for p in allowed["problems"])
    # ls lists the broken one as unreadable, show says what is wrong with it
    ls = run("ls", "--json", *subject.args)
    assert any(d.get("error") and d["path"] == where["old"] for d in json.loads(ls.stdout))
    shown = run("show", ENTRIES["old"].key[:10], *subject.args)
    assert shown.returncode == 1 and "not valid YAML" in shown.stderr


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    binary = require_redis_server()
    with RedisServer(binary=binary, extra_args=("--requirepass", "s3cret-pw")) as server:
        yield server


def test_a_store_password_is_never_printed(password_server: RedisServer, tmp_path: Path) -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{password_server.port}/0?prefix=pw-test:"
    from llm_cache.stores.redis import RedisStore

    store = RedisStore.from_url(url)
    try:
        store.put(ENTRIES["new"])
        page = tmp_path / "r.html"
        for args in (["report", "--json"], ["report", "--html", str(page)], ["ls"], ["stats"], ["verify"],
                     ["prune", "--expired", "--dry-run"]):
            out = run(*args, "--store", url)
            assert out.returncode == 0, out.stderr
            assert "s3cret-pw" not in out.stdout + out.stderr
        data = json.loads(run("report", "--json", "--store", url).stdout)
        assert data["store"] == data["inventory"]["store"] == url.replace("s3cret-pw", "***")
        assert "s3cret-pw" not in page.read_text()
        wrong = run("ls", "--store", url.replace("s3cret-pw", "wrong-pw"))
        assert wrong.returncode == 1 and "wrong-pw" not in wrong.stderr and "is unavailable" in wrong.stderr
        # the server is up: what to check is the password, not whether it runs
        assert "Check the user name and password in its URL, or give another store with --store" in wrong.stderr
        assert "Start it" not in wrong.stderr
    finally:
        store.clear()
        store.close()


@pytest.mark.parametrize("command", [["ls"], ["stats"], ["verify"], ["prune", "--expired"], ["show", "abcd"],
                                     ["diff", "abcd", "abce"], ["report", "--json"]])
def test_store_misuse_exits_2_and_an_unreachable_store_exits_1(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "c").mkdir()
    both_flags = run(*command, "--dir", str(tmp_path / "c"), "--store", "redis://127.0.0.1:1/0")
    assert both_flags.returncode == 2 and "--dir or with --store, not both" in both_flags.stderr
    memory = run(*command, "--store", "memory://")
    assert memory.returncode == 2 and "a memory store lives in one process only" in memory.stderr
    unknown = run(*command, "--store", "ftp://host/x")
    assert unknown.returncode == 2
    assert "--store must be a store URL: file://PATH, redis://host:port/db?prefix=..." in unknown.stderr
    if importlib.util.find_spec("redis") is None and os.environ.get("LLM_CACHE_REQUIRE_REDIS") != "1":
        pytest.skip("no redis-py here")
    down = run(*command, "--store", "redis://:pw-hidden@127.0.0.1:1/0?timeout=0.5")
    assert down.returncode == 1, down.stderr
    assert "cache store redis://:***@127.0.0.1:1/0" in down.stderr and "is unavailable within 0.5 s" in down.stderr
    assert "pw-hidden" not in down.stderr and "Traceback" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    as_url = run(*command, "--store", f"file://{tmp_path / 'c'}")
    assert as_url.returncode == (1 if command[0] in ("show", "diff") else 0), as_url.stderr
    assert run(*command, "--store", f"file://{tmp_path / 'nope'}").returncode == 1


def test_upgrade_is_for_files_only(tmp_path: Path) -> None:
    out = run("upgrade", "--store", "redis://127.0.0.1:1/0")
    assert out.returncode == 2 and "upgrade rewrites cassette files: --store must be file://PATH" in out.stderr
    assert "a cassette directory only" in " ".join(run("upgrade", "--help").stdout.split())
    (tmp_path / "c").mkdir()
    assert run("upgrade", "--store", f"file://{tmp_path / 'c'}").returncode == 0


def test_report_usage(tmp_path: Path) -> None:
    (tmp_path / "cassettes").mkdir()
    neither = run("report", cwd=tmp_path)
    assert neither.returncode == 2 and "report needs --html PATH (or --json" in neither.stderr
    a_dir = run("report", "--html", str(tmp_path), cwd=tmp_path)
    assert a_dir.returncode == 2 and "--html must be a path where an HTML file can be written" in a_dir.stderr
    empty = json.loads(run("report", "--json", cwd=tmp_path).stdout)
    assert empty["entries"] == 0 and empty["store"] == "cassettes"


# -- diff of two files needs no store ----------------------------------------------------------


def test_diff_of_two_files_needs_no_dir(tmp_path: Path) -> None:
    store = _file_subject(tmp_path).store
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    a = store.path_for(ENTRIES["old"].key, ENTRIES["old"].model_version)
    b = store.path_for(ENTRIES["new"].key, ENTRIES["new"].model_version)
    out = run("diff", str(a), str(b), cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"--- {a}\n+++ {b}\n")
    assert 'response.json.choices[0].message.content: "old answer" -> "new answer"' in out.stdout
    assert run("show", str(a), cwd=elsewhere).returncode == 0
    # a key prefix still needs a store
    prefix = run("diff", str(a), ENTRIES["new"].key[:8], cwd=elsewhere)
    assert prefix.returncode == 1 and "no cassette directory at cassettes" in prefix.stderr
    missing = run("diff", str(a), str(tmp_path / "gone.yaml"), cwd=elsewhere)
    assert missing.returncode == 1 and "no cassette file at" in missing.stderr


def test_python_m_llm_cache_cli_runs_the_command(subject: Subject) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "llm_cache.cli", "ls", "--json", *subject.args],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 6
