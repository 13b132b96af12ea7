"""The session summary, the JSON report, and stats merged across workers."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timezone

from llm_cache.meta import EntryMeta
from llm_cache.policy import Cap
from llm_cache.report import Report, report_json, summary_lines
from llm_cache.report.model import Unused
from llm_cache.stats import Counts, Miss, SessionStats, StaleUse


def miss(i: int) -> Miss:
    return Miss(f"tests/test_x.py::test_{i}", "gpt-4o" if i % 2 else None, "/v1/chat/completions", f"{i:02d}" * 32)


def stats(**counts) -> SessionStats:
    return SessionStats(counts=Counts(**counts), tests_used=3)


def test_no_summary_when_no_test_used_the_cache():
    s = SessionStats(counts=Counts(hits=5))
    assert summary_lines(Report(s, "replay", "cassettes", 3, 100)) == []


def test_summary_lines_exact():
    s = stats(hits=3, misses=1, stale=1)
    s.tokens_saved = {"gpt-4o": 30, "claude-3-5-sonnet": 12}
    s.misses_detail = [miss(1)]
    assert summary_lines(Report(s, "replay", "/p/cassettes", 1, 2048)) == [
        "mode: replay   store: /p/cassettes (1 entry, 2.0 KB)",
        "hits: 3   misses: 1   recorded: 0   refreshed: 0   stale: 1   hit rate: 75%",
        "tokens served from cassettes: 42 (claude-3-5-sonnet 12, gpt-4o 30)",
        "misses (1):",
        f"  tests/test_x.py::test_1  gpt-4o  /v1/chat/completions  {'01' * 6}",
        "record them with --llm-cache=record",
        "1 cassette past the TTL served; re-record with --llm-cache=refresh",
    ]


def test_summary_plurals_sizes_and_extra_counts():
    lines = summary_lines(Report(stats(hits=1, recorded=2, not_stored=1, corrupt=2, stale=2), "record", "c", 2, 100))
    assert lines == [
        "mode: record   store: c (2 entries, 100 B)",
        "hits: 1   misses: 0   recorded: 2   refreshed: 0   stale: 2   hit rate: 25%",
        "not stored: 1   corrupt: 2",
        "2 cassettes past the TTL served; re-record with --llm-cache=refresh",
    ]


def test_summary_sizes_in_mb():
    assert summary_lines(Report(stats(), "off", "c", 0, 3_000_000))[0] == "mode: off   store: c (0 entries, 3.0 MB)"


def test_summary_caps_misses_at_ten():
    s = stats(misses=12)
    s.misses_detail = [miss(i) for i in range(12)]
    lines = summary_lines(Report(s, "replay", "c", 0, 0))
    start = lines.index("misses (12):")
    shown = lines[start + 1 : start + 11]
    assert [line.split()[0] for line in shown] == [f"tests/test_x.py::test_{i}" for i in range(10)]
    assert lines[start + 11] == "  ... and 2 more"
    assert "  -  " in shown[0]  # no model


def test_report_json():
    s = stats(hits=3, misses=1, recorded=2, refreshed=1, stale=1)
    s.tokens_saved = {"gpt-4o": 30, "claude": 12}
    s.misses_detail = [miss(1)]
    data = report_json(Report(s, "refresh", "/p/cassettes", 7, 4096))
    assert json.loads(json.dumps(data)) == data
    assert {k: data[k] for k in ["mode", "hits", "misses", "recorded", "refreshed", "stale", "hit_rate",
                                 "tokens_saved", "entries", "bytes", "misses_detail"]} == {
        "mode": "refresh",
        "hits": 3,
        "misses": 1,
        "recorded": 2,
        "refreshed": 1,
        "stale": 1,
        "hit_rate": 0.4286,
        "tokens_saved": 42,
        "entries": 7,
        "bytes": 4096,
        "misses_detail": [
            {"test_id": "tests/test_x.py::test_1", "model": "gpt-4o", "endpoint": "/v1/chat/completions",
             "key": "01" * 32, "closest": None, "differences": []}
        ],
    }
    assert data["tokens_saved_by_model"] == {"claude": 12, "gpt-4o": 30}


def test_hit_rate_zero_without_lookups():
    assert Counts().hit_rate == 0.0
    assert Counts(hits=1, not_stored=1).hit_rate == 0.5


# -- stats across workers --------------------------------------------------------------


def _run(s: SessionStats, events: list[tuple]) -> None:
    """Replay the same events into a session's stats, as a process would."""
    for kind, *args in events:
        test = Counts()
        if kind == "test":
            s.tests_used += 1
        elif kind == "tokens":
            s.add_tokens(*args)
        elif kind == "miss":
            s.bump(test, "misses")
            s.add_miss(args[0])
        else:
            s.bump(test, kind, *args)


WORKER_A = [("test",), ("hits", 2), ("stale",), ("tokens", "gpt-4o", 10, 20), ("miss", miss(1)), ("corrupt",)]
WORKER_B = [("test",), ("test",), ("hits",), ("recorded", 3), ("refreshed",), ("not_stored",),
            ("tokens", "gpt-4o", 2, 3), ("tokens", "claude", 3, 4), ("miss", miss(2)), ("miss", miss(3))]


def test_merge_of_workers_equals_one_process():
    one = SessionStats()
    _run(one, WORKER_A + WORKER_B)
    a, b = SessionStats(), SessionStats()
    _run(a, WORKER_A)
    _run(b, WORKER_B)
    controller = SessionStats()
    for worker in (a, b):
        controller.merge(json.loads(json.dumps(worker.to_dict())))  # what crosses the process boundary
    assert controller.to_dict() == one.to_dict()
    assert controller.to_dict()["counts"] == {
        "hits": 3, "misses": 3, "recorded": 3, "refreshed": 1, "stale": 1, "not_stored": 1, "corrupt": 1, "refused": 0
    }
    assert controller.tokens_saved == {"gpt-4o": 35, "claude": 7}
    assert controller.tokens_io == {"gpt-4o": [12, 23], "claude": [3, 4]}
    assert controller.tests_used == 3


def test_merge_keeps_misses_cap():
    worker = SessionStats()
    for i in range(40):
        worker.add_miss(miss(i))
    controller = SessionStats()
    controller.merge(worker.to_dict())
    controller.merge(worker.to_dict())
    assert len(controller.misses_detail) == 50
    assert controller.misses_detail[40] == miss(0)


def test_bump_counts_test_and_session():
    s, test = SessionStats(), Counts()
    s.bump(test, "hits", 2)
    assert test.hits == 2 and s.counts.hits == 2


def test_unseen_connections_in_summary_and_json_one_per_host_and_test():
    s = stats(recorded=1)
    for host, test in [("127.0.0.1:8080", "t.py::a"), ("127.0.0.1:8080", "t.py::a"), ("api.x.com:443", "t.py::b")]:
        s.add_unseen(host, test)
    report = Report(s, "record", "c", 1, 10)
    assert summary_lines(report)[-4:] == [
        "unseen (2): connections the cache could not see, nothing of them recorded",
        "  127.0.0.1:8080  t.py::a",
        "  api.x.com:443  t.py::b",
        "make them through a client the cache can see, or allow their hosts with llm_cache_allowed_hosts",
    ]
    assert report_json(report)["unseen"] == [
        {"host": "127.0.0.1:8080", "test_id": "t.py::a"}, {"host": "api.x.com:443", "test_id": "t.py::b"},
    ]


def test_merge_adds_the_unseen_of_workers():
    one, two, controller = SessionStats(), SessionStats(), SessionStats()
    one.add_unseen("h:1", "t.py::a")
    two.add_unseen("h:1", "t.py::b")
    for worker in (one, two):
        controller.merge(json.loads(json.dumps(worker.to_dict())))
    assert [(u.host, u.test_id) for u in controller.unseen] == [("h:1", "t.py::a"), ("h:1", "t.py::b")]


def test_summary_paths_relative_to_where_the_run_started():
    """Paths under the invocation directory are shown as the user can type them there; a
    store elsewhere, a URL, and a sibling directory with the same prefix stay whole."""
    sep = os.sep
    base = f"{sep}work{sep}proj"
    s = stats(hits=1)
    s.stale_uses = [StaleUse("t::a", "ab" * 32, f"{base}{sep}cassettes{sep}gpt-4o{sep}ab.yaml", 90_000, 3600)]
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    unused = Unused(None, tuple(EntryMeta("cd" * 32, "gpt-4o", when, 10, where) for where in (
        f"{base}{sep}cassettes{sep}gpt-4o{sep}cd.yaml", f"{base}-other{sep}cassettes{sep}ef.yaml")))
    report = Report(s, "replay", f"{base}{sep}cassettes", 1, 10, stale_policy="warn", unused=unused,
                    report_path=f"{base}{sep}out{sep}r.json", shown_from=base)
    lines = summary_lines(report)
    assert lines[0].startswith("mode: replay   store: cassettes (1 entry")
    assert f"  cassettes{sep}gpt-4o{sep}ab.yaml  1d old (TTL 1h)  t::a" in lines  # 1h: not the report's TTL
    assert f"  cassettes{sep}gpt-4o{sep}cd.yaml" in lines
    assert f"  {base}-other{sep}cassettes{sep}ef.yaml" in lines
    assert any(f"llm-cache prune --unused-in out{sep}r.json" in line for line in lines)
    # without a starting directory (the library's stats()), every path is whole
    whole = summary_lines(dataclasses.replace(report, shown_from=None))
    assert whole[0].startswith(f"mode: replay   store: {base}{sep}cassettes (")
    assert summary_lines(dataclasses.replace(report, location="redis://h:6379/0"))[0].startswith(
        "mode: replay   store: redis://h:6379/0 (")


def test_the_cap_line_only_after_a_session_that_could_evict():
    """Eviction runs after a session that recorded: a replay's summary has no 'evicted: 0'."""
    cap = Cap(max_entries=3)
    assert not any(line.startswith("evicted") for line in summary_lines(Report(stats(hits=2), "replay", "c", 2, 10, cap)))
    assert "evicted: 0 (cap 3 entries, lru)" in summary_lines(Report(stats(recorded=1), "record", "c", 2, 10, cap))[2]
    evicted = stats(hits=1)
    evicted.evicted = 2
    assert "evicted: 2 (cap 3 entries, lru)" in summary_lines(Report(evicted, "replay", "c", 1, 10, cap))[2]
