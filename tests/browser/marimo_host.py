"""Drive a real marimo notebook (``marimo edit``) in headless Chromium, for browser tests.

`MarimoServer` writes a notebook file into a temporary folder and serves it with ``python -m
marimo edit --headless`` from the running interpreter on a free loopback port (no token, its
config and log isolated); `open(page)` loads it in a Playwright page and waits until every cell
has run. Kernels import sam_widget from this checkout (PYTHONPATH).

    with MarimoServer(NOTEBOOK) as server:
        page = browser.new_page(); server.open(page)
        page.locator("canvas.sam-markers").click()   # locators pierce marimo's shadow roots
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness import REPO_ROOT, HarnessError, free_port, timeout_s


class MarimoServer:
    """``marimo edit`` serving one notebook (Python source `source`) on 127.0.0.1."""

    def __init__(self, source: str, *, name: str = "notebook.py") -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="sam-widget-marimo-"))
        self.path = self._tmp / name
        self.path.write_text(source)
        self.log_path = self._tmp / "server.log"
        self.port = 0
        self.url = ""
        self._proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> MarimoServer:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
        env["XDG_CONFIG_HOME"] = str(self._tmp / "config")  # our marimo.toml, not the user's
        config = self._tmp / "config" / "marimo" / "marimo.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        # run every cell when the page opens, and re-run dependents on changes
        config.write_text('[runtime]\nauto_instantiate = true\non_cell_change = "autorun"\n')
        env["XDG_CACHE_HOME"] = str(self._tmp / "cache")
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "marimo", "edit", str(self.path), "--headless",
             "--host", "127.0.0.1", "-p", str(self.port), "--no-token",
             "--skip-update-check", "--no-sandbox"],
            cwd=self._tmp, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s()
        while True:
            if self._proc.poll() is not None:
                raise HarnessError(f"marimo exited during start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5):
                    return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(f"marimo did not answer in time:\n{self.log_tail()}")
            time.sleep(0.2)

    def open(self, page) -> None:
        """Load the notebook in `page` and wait until no cell is queued or running."""
        page.goto(self.url)
        page.wait_for_selector("[data-cell-id]", timeout=timeout_s() * 1000)
        self.wait_idle(page)

    @staticmethod
    def wait_idle(page) -> None:
        """Wait until marimo shows no running or queued cell."""
        page.wait_for_function(
            """() => document.querySelectorAll('[data-cell-id]').length > 0 &&
                 document.querySelectorAll('[data-status="running"], [data-status="queued"]')
                   .length === 0""",
            timeout=timeout_s() * 1000,
        )

    def log_tail(self, lines: int = 60) -> str:
        if self._log is not None:
            self._log.flush()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MarimoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)
