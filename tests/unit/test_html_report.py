"""The HTML report: one self-contained, escaped page made from hand-made report values."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

from llm_cache.meta import EntryMeta
from llm_cache.report.html import report_html
from llm_cache.report.html_parts import histogram_svg, word_diff
from llm_cache.report.model import AGE_BUCKETS, Report, Unused, store_report, take_inventory
from llm_cache.stats import Counts, Drift, Miss, SessionStats, StaleUse, Unseen

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
EVIL = "<script>alert(1)</script>\"' onmouseover=\"x()\" &amp;"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27; onmouseover=&quot;x()&quot; &amp;amp;"
DAY = timedelta(days=1)


def meta(key: str, version: str, age: timedelta | None, size: int = 100) -> EntryMeta:
    return EntryMeta(key, version, NOW - age if age is not None else None, size, f"cassettes/{version}/{key}.yaml")


METAS = [
    meta("a1", "gpt-4o@2024-08-06", timedelta(hours=2)),
    meta("a2", "gpt-4o@2024-08-06", 3 * DAY),
    meta("a3", "gpt-4o@2024-08-06", 4 * DAY),
    meta("a4", "gpt-4o@2024-08-06", 5 * DAY),
    meta("a5", "gpt-4o@2024-08-06", 400 * DAY),
    meta("b1", EVIL, 10 * DAY),
    meta("b2", EVIL, None),
]


def rich_stats() -> SessionStats:
    s = SessionStats(counts=Counts(hits=7, misses=2, recorded=3, refreshed=1, stale=1, not_stored=1), tests_used=3)
    s.tokens_saved = {"gpt-4o": 120}
    s.tokens_io = {"gpt-4o": [100, 20]}
    s.not_stored_reasons = {"status 500": 1}
    s.tests = {
        "tests/test_b.py::test_two": Counts(hits=1, recorded=2),
        EVIL: Counts(hits=5, misses=1, stale=1),
        "tests/test_a.py::test_one": Counts(hits=1, misses=1, recorded=1, refreshed=1),
    }
    s.misses_detail = [
        Miss(EVIL, EVIL, "/v1/chat/" + EVIL, "ab" * 32, "cassettes/" + EVIL, ["messages", EVIL]),
        Miss("tests/test_a.py::test_one", None, "/v1/embeddings", "cd" * 32),
    ]
    s.drift = [
        Drift("tests/test_a.py::test_one", "0123456789ab", "text",
              "The cat sat on the mat.\nIt was " + EVIL, "The dog sat on the red mat.\nIt was " + EVIL),
    ]
    s.stale_uses = [StaleUse(EVIL, "ef" * 32, "cassettes/gpt-4o/" + EVIL, 40 * 86400.0, 30 * 86400.0, failed=True)]
    s.unseen = [Unseen("upstream.invalid:443", EVIL)]
    return s


def rich_report(**kwargs: object) -> Report:
    values: dict[str, object] = {
        "prices": {"gpt-4o": (2.5, 10.0)}, "ttl": timedelta(days=30), "unused_policy": "warn",
        "unused": Unused(None, (METAS[0], METAS[5])),
        "inventory": take_inventory(METAS, "cassettes", NOW, timedelta(days=30)), "created_at": NOW,
    }
    values.update(kwargs)
    return Report(rich_stats(), "refresh", "cassettes/" + EVIL, 7, 12_345, **values)  # type: ignore[arg-type]


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the ids."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]

    @property
    def ids(self) -> list[str | None]:
        return [attrs["id"] for _, attrs in self.tags if "id" in attrs]


def section(page: str, ident: str) -> str:
    match = re.search(rf'<section id="{ident}">(.*?)</section>', page, re.DOTALL)
    assert match, ident
    return match.group(1)


def test_a_whole_document_with_a_title_and_its_time():
    page = report_html(rich_report())
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\">") and page.rstrip().endswith("</html>")
    assert "<title>llm-cache report</title>" in page
    assert '<time datetime="2025-03-01T12:00:00+00:00">2025-03-01 12:00:00 UTC</time>' in page


def test_every_value_from_the_report_is_escaped():
    page = report_html(rich_report())
    assert "<script>alert" not in page and 'onmouseover="' not in page
    elements = Elements(page)
    assert len(elements.named("script")) == 1, "the page's own script only"
    assert all(not name.startswith("on") for _, attrs in elements.tags for name in attrs)
    # where the hostile value went: test ids, model, endpoint, closest, differences, drift text,
    # stale location, unseen test, model version, the store
    assert page.count(ESCAPED) >= 12
    [row] = [attrs for attrs in elements.named("td") if attrs.get("data-value") == EVIL]
    assert row["class"] == "test-id"


def test_nothing_is_loaded_from_anywhere():
    page = report_html(rich_report())
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", page, re.IGNORECASE)
    assert not re.search(r"https?:", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    elements = Elements(page)
    assert all(attrs["href"].startswith("#") for attrs in elements.named("a"))  # type: ignore[union-attr]
    assert not any("src" in attrs for _, attrs in elements.tags)
    assert not elements.named("link") and not elements.named("img") and not elements.named("iframe")
    [csp] = [a for a in elements.named("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert (csp["content"] or "").startswith("default-src 'none'")


def test_each_section_once():
    ids = Elements(report_html(rich_report())).ids
    for ident in ("figures", "tests", "misses", "drift", "unseen", "stale", "unused", "inventory"):
        assert ids.count(ident) == 1, ident
    assert len(ids) == len(set(ids))


def test_figures_as_in_the_summary():
    figures = section(report_html(rich_report()), "figures")
    shown = dict(re.findall(r'data-figure="([^"]+)"><dt>[^<]*</dt><dd>([^<]*)', figures))
    assert shown == {
        "mode": "refresh", "store": "cassettes/" + ESCAPED, "entries": "7", "bytes": "12.3 KB", "tests": "3",
        "hits": "7", "misses": "2", "recorded": "3", "refreshed": "1", "stale": "1", "not stored": "1",
        # 7 hits of 14 lookups; 100 input tokens at $2.5 and 20 output at $10 per million
        "hit rate": "50%", "tokens served": "120", "cost saved": "$0.000450",
    }
    assert "status 500 1" in figures and "gpt-4o 120" in figures
    assert "cost saved" not in report_html(rich_report(prices={}))


def test_tests_table_sortable_by_each_column():
    tests = section(report_html(rich_report()), "tests")
    elements = Elements(tests)
    assert [(a["data-column"], a["data-sort"]) for a in elements.named("th")] == [
        ("test", "text"), ("hits", "number"), ("misses", "number"), ("recorded", "number"),
        ("refreshed", "number"), ("stale", "number"),
    ]
    rows = [a for a in elements.named("tr") if a.get("class") == "test-row"]
    assert [a["data-order"] for a in rows] == ["0", "1", "2"]
    ids = [a["data-value"] for a in elements.named("td") if a.get("class") == "test-id"]
    assert ids == sorted([EVIL, "tests/test_a.py::test_one", "tests/test_b.py::test_two"])
    hits = [a["data-value"] for a in elements.named("td") if a.get("class") == "num hits"]
    assert hits == ["5", "1", "1"]


def test_misses_with_their_closest_request():
    misses = section(report_html(rich_report()), "misses")
    assert f"<code>cassettes/{ESCAPED}</code>" in misses
    assert f"<code>messages</code>, <code>{ESCAPED}</code>" in misses
    assert "ab" * 32 in misses and "/v1/embeddings" in misses
    assert "no stored request for this model and endpoint" in misses
    assert "Misses (2)" in report_html(rich_report())


def test_word_diff_marks_the_changed_words_only():
    old, new = word_diff("the cat sat on the mat", "the dog sat on the red mat")
    assert old == "the <del>cat</del> sat on the mat"
    assert new == "the <ins>dog</ins> sat on the <ins>red</ins> mat"
    # a run of changed words is one mark, the spaces around it outside; line breaks kept
    old, new = word_diff("a b c\nd", "a x y\nd")
    assert (old, new) == ("a <del>b c</del>\nd", "a <ins>x y</ins>\nd")
    assert word_diff("same words", "same words") == ("same words", "same words")
    assert word_diff("", "new") == ("", "<ins>new</ins>")
    old, new = word_diff("<b>bold</b> & more", "<i>it</i> & more")
    assert old == "<del>&lt;b&gt;bold&lt;/b&gt;</del> &amp; more"
    assert new == "<ins>&lt;i&gt;it&lt;/i&gt;</ins> &amp; more"


def test_drift_side_by_side():
    drift = section(report_html(rich_report()), "drift")
    assert 'data-test="tests/test_a.py::test_one" data-key="0123456789ab" data-field="text"' in drift
    assert '<div class="side old"><h4>old</h4><pre>The <del>cat</del> sat on the mat.\nIt was ' + ESCAPED in drift
    assert '<div class="side new"><h4>new</h4><pre>The <ins>dog</ins> sat on the <ins>red</ins> mat.' in drift
    assert drift.count("<del>") == 1 and drift.count("<ins>") == 2


def test_unused_known_unknown_and_not_looked_for():
    unused = section(report_html(rich_report()), "unused")
    assert "2 cassettes no test used" in unused and "cassettes/gpt-4o@2024-08-06/a1.yaml" in unused
    assert f"<td>{ESCAPED}</td>" in unused  # the model version
    assert "llm_cache_unused = warn" in unused
    unknown = section(report_html(rich_report(unused=Unused("only 3 of 9 tests ran: " + EVIL))), "unused")
    assert f"Cannot tell: only 3 of 9 tests ran: {ESCAPED}." in unknown
    off = section(report_html(rich_report(unused=None, unused_policy="off")), "unused")
    assert "Not looked for (llm_cache_unused = off)." in off
    none = section(report_html(rich_report(unused=Unused(None), unused_policy="fail")), "unused")
    assert "None: every cassette was used." in none
    one = section(report_html(rich_report(unused=Unused(None, (METAS[1],)), report_path="out/r.json")), "unused")
    assert "1 cassette no test used." in one
    assert "<code>llm-cache prune --unused-in out/r.json</code>." in one


def test_stale_cassettes_met():
    stale = section(report_html(rich_report()), "stale")
    assert "<td>40d</td><td>30d</td>" in stale and '<span class="failed">failed</span>' in stale
    assert "llm_cache_stale = serve" in stale


def test_inventory_table_and_one_histogram_per_version():
    page = report_html(rich_report())
    inventory = section(page, "inventory")
    elements = Elements(inventory)
    bars = [a for a in elements.named("rect") if a.get("class") == "bar"]
    labels = [label for label, _ in AGE_BUCKETS]
    assert [a["data-bucket"] for a in bars] == labels * 2
    # versions sorted by name: the hostile one, then gpt-4o's (one < 1 day, three 1-7 days, one > 1 year)
    assert [a["data-count"] for a in bars] == ["0", "0", "1", "0", "0", "0", "1", "3", "0", "0", "0", "1"]
    heights = [float(a["height"] or "") for a in bars[6:]]
    assert heights == [40.0, 120.0, 0.0, 0.0, 0.0, 40.0]
    assert inventory.count('<text class="label"') == 12
    assert f'data-model-version="{ESCAPED}"' in inventory
    assert ": 7 entries, 700 B, 1 expired.</p>" in inventory


def test_histogram_with_nothing_dated():
    svg = histogram_svg("t", ["x", "y"], [0, 0])
    assert svg.count('height="0"') == 2 and 'data-count="0"' in svg


def test_no_inventory_no_section():
    page = report_html(rich_report(inventory=None))
    assert 'id="inventory"' not in page and "<svg" not in page


def test_same_report_same_page():
    first = report_html(rich_report())
    again = rich_report()
    again.stats.tests = dict(reversed(list(again.stats.tests.items())))
    assert report_html(again) == first == report_html(rich_report())


class MemoryStore:
    def __init__(self, metas: list[EntryMeta]) -> None:
        self.metas = metas

    def scan(self) -> list[EntryMeta]:
        return list(self.metas)


def test_a_store_without_a_run():
    report = store_report(MemoryStore(METAS), "cassettes", timedelta(days=30), now=NOW)  # type: ignore[arg-type]
    page = report_html(report)
    ids = Elements(page).ids
    assert "figures" in ids and "inventory" in ids
    for ident in ("tests", "misses", "drift", "unused", "stale", "unseen"):
        assert ident not in ids
    figures = section(page, "figures")
    shown = dict(re.findall(r'data-figure="([^"]+)"><dt>[^<]*</dt><dd>([^<]*)', figures))
    # past the TTL of 30 days: a5 (400 days) alone; b2 is unreadable, not expired
    assert shown == {"store": "cassettes", "entries": "7", "bytes": "700 B", "expired": "1", "TTL": "30d"}
    assert "store inventory" in page and "hits" not in figures
    assert report_html(store_report(MemoryStore(METAS), "cassettes", None, now=NOW)) != page  # type: ignore[arg-type]
