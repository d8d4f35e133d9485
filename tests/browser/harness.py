"""Drive a real JupyterLab in headless Chromium, for browser tests and benchmarks.

`JupyterLabServer` starts ``python -m jupyter lab`` from the running interpreter on a free
loopback port with a token, an isolated temporary root / config / settings directory and its log
captured to a file; `Lab` adds Playwright's Chromium (Debian's, see `chromium_path`) and opens
`Notebook` pages in which tests run cells, read Python state and locate widget output areas.

    with JupyterLabServer() as server, Lab(server) as lab:
        nb = lab.new_notebook()
        cell = nb.run_cell("w = MyWidget(); w")
        cell.output.locator("button").click()
        nb.wait_until("w.clicks == 1")  # the view updates before the kernel hears of it

Everything the browser does goes through JupyterLab's own application object (exposed with
``--LabApp.expose_app_in_browser``), so cells run exactly as a user's Shift+Enter runs them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Chromium flags for a quiet, offline, sandbox-less headless browser (containers, CI).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

#: The module name of sam-widget's Jupyter server extension (see sam_widget/server.py).
SERVER_EXTENSION = "sam_widget.server"


def timeout_s() -> float:
    """How long (seconds) one browser/server wait may take before the harness gives up.

    Generous by default because the test machines are shared; set SAM_WIDGET_BROWSER_TIMEOUT to
    change it. This is a hang guard, never a performance assertion.
    """
    return float(os.environ.get("SAM_WIDGET_BROWSER_TIMEOUT", "180"))


def chromium_path() -> str:
    """The Chromium executable: env SAM_WIDGET_CHROMIUM, else /usr/bin/chromium."""
    path = os.environ.get("SAM_WIDGET_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        raise FileNotFoundError(
            f"Chromium not found at {path!r}: install it (Debian: apt-get install chromium) "
            "or set SAM_WIDGET_CHROMIUM to its path"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HarnessError(RuntimeError):
    """The server or the browser did not do what the harness asked (with its log attached)."""


class CellError(RuntimeError):
    """Python code run by the harness raised; `ename`, `evalue`, `traceback` say what."""

    def __init__(self, ename: str, evalue: str, traceback: str) -> None:
        super().__init__(f"{ename}: {evalue}\n{traceback}")
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback


# JupyterLab settings that keep a fresh profile from interrupting tests: no news / update
# toasts, no extension manager fetching PyPI, every cell attached to the DOM (no windowing),
# and no confirmation dialogs when pages close.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
    "@jupyterlab/notebook-extension/tracker": {
        "windowingMode": "none",
        "kernelShutdown": False,
        "autoStartDefaultKernel": True,
    },
    "@jupyterlab/apputils-extension/sessionDialogs": {},
    "@jupyterlab/application-extension/context": {},
}


class JupyterLabServer:
    """A JupyterLab server process on 127.0.0.1 for one test session or one benchmark.

    Keyword arguments:
        root_dir: the notebook root; a fresh temporary directory when omitted.
        server_extension: True loads sam-widget's server extension (``sam_widget.server``)
            explicitly, False disables it even where an installed config file enables it,
            None leaves the environment's configuration alone.
        extra_args: more command-line arguments for ``jupyter lab``.
        env: extra environment variables for the server and its kernels.
        pythonpath: directories prepended to PYTHONPATH so kernels import sam_widget from this
            checkout (default: the repository root).
        log_level: the server's log level ("DEBUG" shows per-message activity).
        app: "lab" (JupyterLab) or "notebook" (Notebook 7: same front-end machinery, one
            notebook per page, shortcuts listened for in the capture phase).

    Attributes: `url` (base URL, no token), `token`, `log_path` (server stdout+stderr),
    `root_dir`.
    """

    def __init__(
        self,
        *,
        root_dir: str | Path | None = None,
        server_extension: bool | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        pythonpath: list[str | Path] | None = None,
        log_level: str = "INFO",
        app: str = "lab",
    ) -> None:
        if app not in ("lab", "notebook"):
            raise ValueError(f"app must be 'lab' or 'notebook', got {app!r}")
        self.app = app
        self._tmp = Path(tempfile.mkdtemp(prefix="sam-widget-lab-"))
        self.root_dir = Path(root_dir) if root_dir is not None else self._tmp / "root"
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.server_extension = server_extension
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.pythonpath = [str(p) for p in (pythonpath or [REPO_ROOT])]
        self.log_level = log_level
        self.token = secrets.token_hex(16)
        self.port = 0
        self.url = ""
        self.log_path = self._tmp / "server.log"
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    # -- lifecycle -----------------------------------------------------------------------
    def _write_settings(self) -> Path:
        settings = self._tmp / "lab-settings"
        for plugin, values in LAB_SETTINGS.items():
            pkg, name = plugin.rsplit("/", 1)
            target = settings / pkg / f"{name}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        return settings

    def command(self) -> list[str]:
        """The full command line that starts the server."""
        cls = "LabApp" if self.app == "lab" else "JupyterNotebookApp"
        args = [
            sys.executable,
            "-m",
            "jupyter",
            self.app,
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.allow_remote_access=False",
            f"--{cls}.expose_app_in_browser=True",
            f"--{cls}.user_settings_dir={self._write_settings()}",
            f"--{cls}.workspaces_dir={self._tmp / 'workspaces'}",
            f"--ServerApp.log_level={self.log_level}",
        ]
        if self.app == "lab":
            args.append("--LabApp.news_url=")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")  # containers and CI often run as root
        if self.server_extension is not None:
            # an explicit entry wins over any jupyter_server_config.d file
            args.append(
                f"--ServerApp.jpserver_extensions={SERVER_EXTENSION}={self.server_extension}"
            )
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server's environment: isolated Jupyter/IPython dirs, PYTHONPATH to the checkout."""
        env = dict(os.environ)
        for var, sub in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("IPYTHONDIR", "ipython"),
        ]:
            env[var] = str(self._tmp / sub)
        env["JUPYTER_PLATFORM_DIRS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            self.pythonpath + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start(self) -> JupyterLabServer:
        """Start the server and wait until its REST API answers."""
        if self._proc is not None:
            raise HarnessError("server already started")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.root_dir,
            env=self.environment(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s()
        while True:
            if self._proc.poll() is not None:
                message = f"jupyter lab exited with {self._proc.returncode} during start-up"
                break
            try:
                self.api("GET", "/api/status")
                return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                message = "jupyter lab did not answer in time"
                break
            time.sleep(0.2)
        self.stop()
        tail = self.log_tail()
        self.cleanup()  # nothing of a failed start stays behind; its log is in the error
        raise HarnessError(f"{message}:\n{tail}")

    def stop(self) -> None:
        """Stop the server: Jupyter's own /api/shutdown, then SIGTERM, then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, urllib.error.URLError):
                self.api("POST", "/api/shutdown")
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        """Stop the server and delete its temporary directory."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> JupyterLabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- REST and logs -------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the server's REST API with the token; returns the decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def page_url(self, path: str, workspace: str) -> str:
        """The address that opens notebook `path` (JupyterLab: in a fresh workspace)."""
        if self.app == "notebook":
            return f"{self.url}/notebooks/{path}?token={self.token}"
        return f"{self.url}/lab/workspaces/{workspace}/tree/{path}?reset&token={self.token}"

    def log_text(self) -> str:
        """Everything the server has logged so far."""
        if self._log_file is not None:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def create_notebook(self, name: str, cells: list[str] = ()) -> str:
        """Write a Python 3 notebook `name` (code cells from `cells`) into the root; its path."""
        nb = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"},
            },
            "cells": [
                {
                    "cell_type": "code",
                    "id": secrets.token_hex(4),
                    "metadata": {},
                    "execution_count": None,
                    "outputs": [],
                    "source": src,
                }
                for src in (list(cells) or [""])
            ],
        }
        self.api("PUT", f"/api/contents/{name}", {"type": "notebook", "content": nb})
        return name

    def shutdown_sessions(self) -> None:
        """Shut down every kernel session (frees CPU between tests)."""
        for session in self.api("GET", "/api/sessions") or []:
            with contextlib.suppress(urllib.error.URLError):
                self.api("DELETE", f"/api/sessions/{session['id']}")


#: Python for a notebook cell: a minimal anywidget (inline _esm) showing a button that counts its
#: clicks into the synced trait `clicks` of widget `w` (used to prove the harness and servers).
CLICKER = '''
import anywidget, traitlets

class Clicker(anywidget.AnyWidget):
    _esm = """
    export default {
      render({ model, el }) {
        const b = document.createElement("button");
        b.className = "harness-clicker";
        b.textContent = "clicks: " + model.get("clicks");
        b.addEventListener("click", () => {
          model.set("clicks", model.get("clicks") + 1);
          model.save_changes();
        });
        model.on("change:clicks", () => { b.textContent = "clicks: " + model.get("clicks"); });
        el.appendChild(b);
      }
    };
    """
    clicks = traitlets.Int(0).tag(sync=True)

w = Clicker()
w
'''


# JavaScript run in the page. `app` is JupyterLab's application (window.jupyterapp).
_JS_FIND_PANEL = """
const findPanel = (path) => {
  const app = window.jupyterapp;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.content && w.content.widgets) return w;
  }
  return null;
};
"""

_JS_WAIT_READY = (
    "async ({path, timeout}) => {"
    + _JS_FIND_PANEL
    + """
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const t0 = Date.now();
  const app = window.jupyterapp;
  await app.started;
  await (app.restored || Promise.resolve());
  let panel = null;
  while (!(panel = findPanel(path))) {
    if (Date.now() - t0 > timeout) throw new Error('notebook ' + path + ' did not open');
    await sleep(50);
  }
  await panel.context.ready;
  await panel.sessionContext.ready;
  for (;;) {
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    if (kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle') {
      await kernel.info;
      break;
    }
    if (Date.now() - t0 > timeout) throw new Error('kernel of ' + path + ' not idle in time');
    await sleep(50);
  }
  app.shell.activateById(panel.id);
  return panel.id;
}"""
)

_JS_RUN_CELL = (
    "async ({path, code, index}) => {"
    + _JS_FIND_PANEL
    + """
  const app = window.jupyterapp;
  const panel = findPanel(path);
  const nb = panel.content;
  const cells = nb.model.sharedModel;
  if (index === null) {
    const n = nb.widgets.length;
    const last = n ? nb.widgets[n - 1] : null;
    const reuse = last && last.model.type === 'code' && last.model.sharedModel.getSource() === ''
      && last.model.executionCount === null && last.model.outputs.length === 0;
    index = reuse ? n - 1 : n;
    if (!reuse) cells.insertCell(n, {cell_type: 'code', source: ''});
  }
  const cell = nb.widgets[index];
  cell.model.sharedModel.setSource(code);
  app.shell.activateById(panel.id);
  nb.activeCellIndex = index;
  nb.deselectAll();
  await app.commands.execute('notebook:run-cell');
  return {index, outputs: cell.model.outputs.toJSON(), count: cell.model.executionCount};
}"""
)

_JS_EXECUTE = (
    "async ({path, code}) => {"
    + _JS_FIND_PANEL
    + """
  const panel = findPanel(path);
  const kernel = panel.sessionContext.session.kernel;
  const outputs = [];
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === 'stream' || t === 'execute_result' || t === 'display_data' || t === 'error') {
      outputs.push(Object.assign({output_type: t}, msg.content));
    }
  };
  await future.done;
  return outputs;
}"""
)

_JS_TAG_CELL = (
    "({path, index, tag}) => {"
    + _JS_FIND_PANEL
    + """
  const panel = findPanel(path);
  const cell = panel.content.widgets[index];
  if (!cell) throw new Error('no cell ' + index + ' in ' + path);
  cell.node.setAttribute('data-harness-cell', tag);
  return panel.content.widgets.length;
}"""
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def outputs_text(outputs: list[dict]) -> str:
    """The text a user reads in nbformat outputs: streams and text/plain results, in order.

    Raises CellError for an error output.
    """
    parts = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "error":
            tb = _ANSI.sub("", "\n".join(out.get("traceback", [])))
            raise CellError(out.get("ename", ""), out.get("evalue", ""), tb)
        if kind == "stream":
            text = out.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else text)
        elif kind in ("execute_result", "display_data"):
            text = out.get("data", {}).get("text/plain")
            if text is not None:
                text = "".join(text) if isinstance(text, list) else text
                parts.append(text if kind == "display_data" else text + "\n")
    return "".join(parts)


class Cell:
    """One executed cell of a `Notebook`: its index, nbformat `outputs`, and DOM locators."""

    def __init__(self, notebook: Notebook, index: int, outputs: list[dict]) -> None:
        self.notebook = notebook
        self.index = index
        self.outputs = outputs

    @property
    def text(self) -> str:
        """The cell's text output (streams + text/plain)."""
        return outputs_text(self.outputs)

    @property
    def locator(self):
        """Playwright locator of the whole cell (input and outputs)."""
        return self.notebook.cell_locator(self.index)

    @property
    def output(self):
        """Playwright locator of the cell's output area (where a displayed widget renders)."""
        return self.locator.locator(".jp-OutputArea-output").first


class Notebook:
    """A notebook open in one JupyterLab page, with its kernel started and idle."""

    def __init__(self, lab: Lab, page, path: str) -> None:
        self.lab = lab
        self.page = page
        self.path = path
        self._tags = itertools.count()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the page shows this notebook and its kernel is connected and idle."""
        self.page.wait_for_function(
            "() => window.jupyterapp !== undefined", timeout=timeout_s() * 1000
        )
        self.page.evaluate(_JS_WAIT_READY, {"path": self.path, "timeout": timeout_s() * 1000})

    def run_cell(self, code: str, *, index: int | None = None, allow_error: bool = False) -> Cell:
        """Put `code` into a cell (a new one at the end, or cell `index`) and run it as Shift+Enter
        does; returns once the kernel has answered and is idle again.

        Raises CellError if the code raised (unless allow_error).
        """
        result = self.page.evaluate(_JS_RUN_CELL, {"path": self.path, "code": code, "index": index})
        cell = Cell(self, result["index"], result["outputs"])
        if not allow_error:
            outputs_text(cell.outputs)  # raises CellError on an error output
        return cell

    def execute(self, code: str) -> str:
        """Run `code` in this notebook's kernel without adding a cell; its text output.

        Raises CellError if the code raised.
        """
        outputs = self.page.evaluate(_JS_EXECUTE, {"path": self.path, "code": code})
        return outputs_text(outputs)

    def value(self, expr: str) -> Any:
        """The value of Python expression `expr` in the kernel, through JSON (e.g. w.points).

        Values JSON cannot hold come back as their repr(); numpy arrays as nested lists.
        """
        marker = "__harness_value__"
        code = (
            "import json as __harness_json\n"
            "def __harness_default(o):\n"
            "    return o.tolist() if hasattr(o, 'tolist') else repr(o)\n"
            f"print({marker!r} + __harness_json.dumps(({expr}), default=__harness_default))"
        )
        for line in reversed(self.execute(code).splitlines()):
            if line.startswith(marker):
                return json.loads(line[len(marker) :])
        raise HarnessError(f"no value printed for {expr!r}")

    def wait_until(self, expr: str, *, poll_s: float = 0.1) -> Any:
        """Poll Python expression `expr` in the kernel until it is truthy; its value.

        Use it after acting in the browser: a widget view shows its own change at once, while
        the kernel hears of it later (ipywidgets sends one state update at a time).

        Gives up (HarnessError) after the harness timeout; a hang guard, not a time limit.
        """
        deadline = time.monotonic() + timeout_s()
        while True:
            value = self.value(expr)
            if value:
                return value
            if time.monotonic() > deadline:
                raise HarnessError(f"{expr!r} still falsy ({value!r}) after {timeout_s()} s")
            time.sleep(poll_s)

    def cell_locator(self, index: int):
        """Playwright locator of cell `index` (negative counts from the end) in this page."""
        if index < 0:
            count = self.page.evaluate(_JS_TAG_CELL, {"path": self.path, "index": 0, "tag": "x"})
            index += count
        tag = f"{self.path}#{index}#{next(self._tags)}"
        self.page.evaluate(_JS_TAG_CELL, {"path": self.path, "index": index, "tag": tag})
        return self.page.locator(f'[data-harness-cell="{tag}"]')

    def save(self) -> None:
        """Save the notebook (outputs and widget state included) as the user would."""
        self.page.evaluate(
            "async ({path}) => {" + _JS_FIND_PANEL + "await findPanel(path).context.save(); }",
            {"path": self.path},
        )

    def reload(self) -> None:
        """Reload the browser page and wait until the notebook and its kernel are ready again.

        Unsaved changes are discarded as "Leave page" would (marked clean first, so JupyterLab
        raises no beforeunload dialog); the kernel and its widgets live on.
        """
        self.page.evaluate(
            """() => {
              for (const w of window.jupyterapp.shell.widgets('main')) {
                if (w.context && w.context.model) w.context.model.dirty = false;
              }
            }"""
        )
        self.page.reload()
        self.wait_ready()


class Lab:
    """Headless Chromium (Playwright sync API) attached to a running `JupyterLabServer`.

    `new_notebook()` creates a notebook and opens it in a new page (its own JupyterLab tab);
    `open_notebook(path)` opens an existing one (a second view shares the same kernel).
    `close()` closes the browser and shuts down the kernels this Lab started.
    """

    def __init__(self, server: JupyterLabServer, *, browser=None) -> None:
        self.server = server
        self._own_playwright = None
        if browser is None:
            from playwright.sync_api import sync_playwright

            self._own_playwright = sync_playwright().start()
            browser = launch_chromium(self._own_playwright)
            self._own_browser = browser
        else:
            self._own_browser = None
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(timeout_s() * 1000)
        self.pages: list = []
        self._names = itertools.count()
        self._workspaces = itertools.count()
        self.console: list[str] = []

    def new_notebook(self, name: str | None = None, *, cells: list[str] = ()) -> Notebook:
        """Create `name` (default a fresh Untitled-N.ipynb) and open it in a new page."""
        name = name or f"harness-{os.getpid()}-{secrets.token_hex(3)}-{next(self._names)}.ipynb"
        self.server.create_notebook(name, list(cells))
        return self.open_notebook(name)

    def open_notebook(self, path: str, *, page=None) -> Notebook:
        """Open notebook `path` in `page` (default a new page with its own workspace)."""
        if page is None:
            page = self.context.new_page()
            page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
            page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))
            page.on("dialog", self._on_dialog)
            self.pages.append(page)
        workspace = f"harness{os.getpid()}x{next(self._workspaces)}"
        page.goto(self.server.page_url(path, workspace))
        return Notebook(self, page, path)

    def _on_dialog(self, dialog) -> None:
        self.console.append(f"dialog: {dialog.type}")
        _answer_dialog(dialog)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.context.close()
        if self._own_browser is not None:
            with contextlib.suppress(Exception):
                self._own_browser.close()
        if self._own_playwright is not None:
            self._own_playwright.stop()
        with contextlib.suppress(OSError, urllib.error.URLError):
            self.server.shutdown_sessions()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _answer_dialog(dialog) -> None:
    """Leave the page when JupyterLab asks about unsaved changes (reloads); dismiss the rest."""
    if dialog.type == "beforeunload":
        dialog.accept()
    else:
        dialog.dismiss()


def launch_chromium(playwright):
    """Launch headless Debian Chromium through a Playwright instance."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
    )
