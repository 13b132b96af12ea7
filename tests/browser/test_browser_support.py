"""The browser tests' skip rule: skipped without a browser, failed instead under
LLM_CACHE_REQUIRE_BROWSER=1 (CI)."""

from __future__ import annotations

import browser_support
import pytest


@pytest.fixture
def no_chromedriver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser_support, "_binary", lambda name: None if name == "chromedriver" else "/bin/true")


def test_skipped_without_a_browser(no_chromedriver: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_CACHE_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromedriver .* is missing"):
        browser_support.require_browser()


def test_failed_without_a_browser_when_required(no_chromedriver: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match=r"chromedriver .* is required \(LLM_CACHE_REQUIRE_BROWSER=1\)"):
        browser_support.require_browser()
