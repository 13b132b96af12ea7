"""End to end: a record then a replay session write --llm-cache-html, and Chromium shows
the run's own figures."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import page_requests, require_browser, start_browser
from conftest import Project

TESTS = """
from conftest import chat
def test_once(client, llm_cache):
    chat(client, "count my tokens please")
def test_twice(client, llm_cache):
    chat(client, "count my tokens please")
    chat(client, "another one")
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_browser()
    driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver: Any, path: Path) -> dict[str, Any]:
    """What the page at ``path`` shows: its figures and the tests table's rows."""
    from selenium.webdriver.common.by import By

    url = path.as_uri()
    page_requests(driver)
    driver.get(url)
    assert page_requests(driver) == [url]
    figures = {
        str(el.get_attribute("data-figure")): str(el.find_element(By.CSS_SELECTOR, "dd").text).splitlines()[0]
        for el in driver.find_elements(By.CSS_SELECTOR, "#figures [data-figure]")
    }
    rows = {
        row.find_element(By.CSS_SELECTOR, "td.test-id").text: [
            int(cell.text) for cell in row.find_elements(By.CSS_SELECTOR, "td.num")
        ]
        for row in driver.find_elements(By.CSS_SELECTOR, "#tests tr.test-row")
    }
    return {"figures": figures, "tests": rows}


def summary_figures(stdout: str) -> dict[str, str]:
    line = next(line for line in stdout.splitlines() if line.startswith("hits: "))
    return dict(re.findall(r"([a-z][a-z ]*?): (\S+)", line))


def test_record_then_replay_report_in_the_browser(project: Project, browser: Any) -> None:
    project.pytester.makepyfile(test_html=TESTS)
    html = project.pytester.path / "report.html"
    record = project.run("--llm-cache=record", "--llm-cache-html=report.html")
    record.assert_outcomes(passed=2)
    page = shown(browser, html)
    assert page["figures"]["mode"] == "record"
    assert page["figures"]["recorded"] == "2" and page["figures"]["hits"] == summary_figures(record.stdout.str())["hits"]
    assert page["figures"]["hits"] == "1"

    replay = project.run("--llm-cache-html=report.html", "--llm-cache-report=report.json")
    replay.assert_outcomes(passed=2)
    figures = json.loads((project.pytester.path / "report.json").read_text())
    page = shown(browser, html)
    summary = summary_figures(replay.stdout.str())
    assert page["figures"]["mode"] == "replay"
    for name in ("hits", "misses", "recorded", "refreshed", "stale"):
        assert page["figures"][name] == summary[name] == str(figures[name]), name
    assert page["figures"]["hits"] == "3" and page["figures"]["entries"] == "2"
    # columns: hits, misses, recorded, refreshed, stale
    assert page["tests"] == {"test_html.py::test_once": [1, 0, 0, 0, 0], "test_html.py::test_twice": [2, 0, 0, 0, 0]}
    bars = browser.execute_script(
        "return Array.from(document.querySelectorAll('#inventory rect.bar')).map(b => +b.dataset.count)"
    )
    assert sum(bars) == 2 and bars[0] == 2  # both recorded moments ago
