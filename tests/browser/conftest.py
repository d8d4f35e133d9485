"""Fixtures for real-browser tests: one JupyterLab server and one headless Chromium per session.

    @pytest.mark.browser
    def test_something(lab):
        nb = lab.new_notebook()
        cell = nb.run_cell("from sam_widget import SamWidget; w = SamWidget(img); w")
        cell.output.locator("canvas").first.click()
        assert nb.value("w.points")

`lab` (per test) is a `harness.Lab`: a fresh browser context whose kernels are shut down after
the test. `lab_server` is the session's `harness.JupyterLabServer` (its `log_text()` reads the
server log). Set SAM_WIDGET_SERVER_EXTENSION=0/1 to run the whole session with sam-widget's
server extension forced off/on (unset: whatever the environment's Jupyter config says).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import JupyterLabServer, Lab, launch_chromium  # noqa: E402


def _extension_choice() -> bool | None:
    value = os.environ.get("SAM_WIDGET_SERVER_EXTENSION", "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise pytest.UsageError(f"SAM_WIDGET_SERVER_EXTENSION={value!r}: use 1, 0 or auto")


@pytest.fixture(scope="session")
def lab_server():
    """The session's JupyterLab server (started once, stopped at the end)."""
    server = JupyterLabServer(server_extension=_extension_choice())
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def chromium():
    """The session's headless Chromium (Playwright sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"_harness_{report.when}_failed", report.failed)
    return report


@pytest.fixture
def lab(request, lab_server, chromium, tmp_path):
    """A fresh browser context on the session's JupyterLab; kernels shut down afterwards.

    When the test fails, its teardown output (shown by pytest) has the browser console, the
    server log tail and screenshots of every page (saved in the test's tmp_path).
    """
    with Lab(lab_server, browser=chromium) as lab:
        yield lab
        if getattr(request.node, "_harness_call_failed", False):
            for i, page in enumerate(lab.pages):
                path = tmp_path / f"page{i}.png"
                try:
                    page.screenshot(path=str(path), full_page=True)
                    print(f"screenshot: {path}")
                except Exception as exc:  # a crashed page must not hide the test's failure
                    print(f"screenshot of page {i} failed: {exc}")
            print("--- browser console ---", *lab.console[-80:], sep="\n")
            print("--- server log (tail) ---", lab_server.log_tail(80), sep="\n")
