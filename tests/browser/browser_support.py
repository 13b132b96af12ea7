"""Debian's headless Chromium driven by selenium, for the tests of the HTML report.

Not a conftest: a second conftest.py would take the name ``conftest`` from the suite's
own, which other modules import (``from conftest import Project``).

- ``require_browser()``: the chromium and chromedriver binaries; skips without them or
  without selenium, unless ``LLM_CACHE_REQUIRE_BROWSER=1`` (CI), which makes it fail.
- ``start_browser(profile)``: a headless Chromium with a fresh profile directory, that
  loads nothing from the network and logs what the page requests.
- ``page_requests(driver)``: the URLs the page has requested since the last call.
- ``save_screenshot(driver, config)``: the whole page as ``llm-cache-report.png`` in
  ``$LLM_CACHE_ARTIFACTS``, else ``<rootdir>/build/test-artifacts/``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

__all__ = ["page_requests", "require_browser", "save_screenshot", "start_browser"]

SCREENSHOT = "llm-cache-report.png"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and os.access(f"/usr/bin/{name}", os.X_OK):
        found = f"/usr/bin/{name}"
    return found


def _missing(what: str) -> None:
    if os.environ.get("LLM_CACHE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} is required (LLM_CACHE_REQUIRE_BROWSER=1) but is missing", pytrace=False)
    pytest.skip(f"{what} is missing: the HTML report's browser tests need Debian's chromium and chromium-driver")


def require_browser() -> tuple[str, str]:
    """The chromium and chromedriver binaries; skips (or fails, with LLM_CACHE_REQUIRE_BROWSER=1) without one."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium (pip install 'pytest-llm-cache[test]')")
    chromium, driver = _binary("chromium"), _binary("chromedriver")
    if chromium is None:
        _missing("chromium (apt-get install chromium)")
    if driver is None:
        _missing("chromedriver (apt-get install chromium-driver)")
    assert chromium is not None and driver is not None
    return chromium, driver


def start_browser(profile: Path) -> Any:
    """A headless Chromium on a fresh ``profile`` directory; quit it after use."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,900", f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.set_page_load_timeout(20)
    return browser


# the browser's own pages and in-page data: nothing that leaves the page's file
_INTERNAL = ("chrome:", "chrome-extension:", "chrome-error:", "devtools:", "about:", "data:", "blob:")


def page_requests(driver: Any) -> list[str]:
    """The URLs requested (documents, scripts, styles, anything) since the last call, but
    the browser's own (``chrome://`` pages it may load on its own, ``data:``)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(_INTERNAL):
                urls.append(url)
    return urls


def save_screenshot(driver: Any, config: pytest.Config) -> Path:
    """The whole page, beyond the window, as the test artifact ``llm-cache-report.png``."""
    folder = Path(os.environ.get("LLM_CACHE_ARTIFACTS") or config.rootpath / "build" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path = folder / SCREENSHOT
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
