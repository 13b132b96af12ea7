"""The HTML report as headless Chromium renders it, loaded offline from a file:// URL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from browser_support import page_requests, require_browser, save_screenshot, start_browser

from llm_cache.meta import EntryMeta
from llm_cache.report.html import report_html
from llm_cache.report.model import AGE_BUCKETS, Report, Unused, take_inventory
from llm_cache.stats import Counts, Drift, Miss, SessionStats, StaleUse

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
EVIL = "tests/test_x.py::test_<script>window.injected = 1</script>\""
OLD = "The capital of France is Paris, a city of museums."
NEW = "The capital of France is Paris, a large city of cafes."
TESTS = {
    "tests/test_a.py::test_alpha": Counts(hits=4, recorded=1),
    "tests/test_b.py::test_beta": Counts(hits=1, misses=1),
    "tests/test_c.py::test_gamma": Counts(hits=9, stale=2),
    EVIL: Counts(hits=2, refreshed=1),
}


def entry(key: str, days: float) -> EntryMeta:
    return EntryMeta(key, "gpt-4o@2024-08-06", NOW - timedelta(days=days), 1000, f"cassettes/gpt-4o/{key}.yaml")


def make_report() -> Report:
    stats = SessionStats(counts=Counts(hits=16, misses=1, recorded=1, refreshed=1, stale=2), tests_used=4)
    for test_id, counts in TESTS.items():
        stats.add_test(test_id, counts)
    stats.tokens_saved = {"gpt-4o": 4321}
    stats.misses_detail = [Miss("tests/test_b.py::test_beta", "gpt-4o", "/v1/chat/completions", "9f" * 32,
                                "cassettes/gpt-4o/ab.yaml", ["messages"])]
    stats.drift = [Drift(EVIL, "0123456789ab", "text", OLD, NEW)]
    stats.stale_uses = [StaleUse("tests/test_c.py::test_gamma", "c" * 64, "cassettes/gpt-4o/c.yaml", 45 * 86400.0,
                                 30 * 86400.0)]
    # ages: 1 under a day, 4 of 1-7 days, 2 of 30-90 days, none elsewhere
    metas = [entry("k0", 0.5)] + [entry(f"k{i}", 1 + i) for i in range(1, 5)] + [entry("k5", 40), entry("k6", 60)]
    inventory = take_inventory(metas, "cassettes", NOW, timedelta(days=30))
    return Report(stats, "replay", "cassettes", 7, 7000, ttl=timedelta(days=30), unused_policy="warn",
                  unused=Unused(None, ()), inventory=inventory, created_at=NOW)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_browser()
    driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(report_html(make_report()), encoding="utf-8")
    return path.as_uri()


@pytest.fixture
def page(browser: Any, url: str) -> Any:
    """The report freshly loaded (nothing clicked yet)."""
    browser.get(url)
    return browser


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def test_figures_shown(page: Any) -> None:
    def figure(name: str) -> str:
        [dd] = css(page, f'#figures [data-figure="{name}"] dd')
        return str(dd.text).splitlines()[0]

    shown = {name: figure(name) for name in ("mode", "store", "entries", "hits", "misses", "recorded", "refreshed",
                                             "stale", "hit rate", "tokens served")}
    assert shown == {"mode": "replay", "store": "cassettes", "entries": "7", "hits": "16", "misses": "1",
                     "recorded": "1", "refreshed": "1", "stale": "2", "hit rate": "84%", "tokens served": "4321"}
    assert page.title == "llm-cache report"


def test_data_stays_text(page: Any) -> None:
    assert page.execute_script("return document.scripts.length") == 1
    assert page.execute_script("return window.injected === undefined")
    ids = [cell.text for cell in css(page, "#tests td.test-id")]
    assert EVIL in ids


def test_drift_side_by_side_with_the_changed_words_marked(page: Any) -> None:
    [drift] = css(page, "#drift .drift")
    assert drift.get_attribute("data-test") == EVIL and drift.get_attribute("data-key") == "0123456789ab"
    [old] = css(drift, ".side.old pre")
    [new] = css(drift, ".side.new pre")
    assert (old.text, new.text) == (OLD, NEW)
    assert [d.text for d in css(old, "del")] == ["museums."] and not css(old, "ins")
    assert [i.text for i in css(new, "ins")] == ["large", "cafes."] and not css(new, "del")
    assert "line-through" in css(old, "del")[0].value_of_css_property("text-decoration-line")
    # two columns: the new text to the right of the old, from the same top
    left, right = old.rect, new.rect
    assert left["x"] + left["width"] <= right["x"] and abs(left["y"] - right["y"]) < 1


def test_age_histogram_bars(page: Any) -> None:
    bars = css(page, "#inventory rect.bar")
    assert [b.get_attribute("data-bucket") for b in bars] == [label for label, _ in AGE_BUCKETS]
    counts = [int(b.get_attribute("data-count")) for b in bars]
    assert counts == [1, 4, 0, 2, 0, 0]
    heights = [page.execute_script("return arguments[0].getBoundingClientRect().height", b) for b in bars]
    assert heights[1] > heights[3] > heights[0] > 0 and heights[2] == heights[4] == 0
    assert heights[1] == pytest.approx(2 * heights[3]) == pytest.approx(4 * heights[0])
    # bars stand on one baseline
    bottoms = {round(page.execute_script("return arguments[0].getBoundingClientRect().bottom", b)) for b in bars}
    assert len(bottoms) == 1
    labels = [t.text for t in css(page, "#inventory svg text.label")]
    assert labels == [label for label, _ in AGE_BUCKETS]


def test_tests_table_sorts_on_a_click(page: Any) -> None:
    def order() -> list[str]:
        return [cell.text for cell in css(page, "#tests tr.test-row td.test-id")]

    assert order() == sorted(TESTS)
    [hits] = css(page, '#tests th[data-column="hits"]')
    hits.click()
    by_hits = sorted(TESTS, key=lambda t: TESTS[t].hits)
    assert order() == by_hits and hits.get_attribute("aria-sort") == "ascending"
    hits.click()
    assert order() == by_hits[::-1] and hits.get_attribute("aria-sort") == "descending"
    [test] = css(page, '#tests th[data-column="test"]')
    test.click()
    assert order() == sorted(TESTS) and hits.get_attribute("aria-sort") is None


def test_nothing_requested_but_the_page(page: Any, url: str, request: pytest.FixtureRequest) -> None:
    page_requests(page)
    page.get(url)
    assert page_requests(page) == [url]
    assert page.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert not [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    shot = save_screenshot(page, request.config)
    assert shot.name == "llm-cache-report.png" and shot.stat().st_size > 1000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_artifacts_folder_from_the_environment(
    page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("LLM_CACHE_ARTIFACTS", str(tmp_path / "artifacts"))
    assert save_screenshot(page, request.config) == tmp_path / "artifacts" / "llm-cache-report.png"
