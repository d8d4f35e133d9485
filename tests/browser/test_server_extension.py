"""sam-widget's Jupyter server extension in a real JupyterLab: loaded from the shipped config
file as a fresh install has it, TCP_NODELAY read back from the live kernel websocket's socket,
widgets working with it on, and the off switch honoured.
"""

from __future__ import annotations

import re

import pytest
from harness import CLICKER, REPO_ROOT, JupyterLabServer, Lab

pytestmark = pytest.mark.browser

# The server logs (at debug level) the TCP_NODELAY value it read back from each kernel
# websocket's socket with getsockopt after setting it.
LIVE_SOCKET = re.compile(r"kernel websocket /api/kernels/[0-9a-f-]+/channels: TCP_NODELAY=(\S+)")


def _click_twice(lab: Lab) -> None:
    nb = lab.new_notebook()
    cell = nb.run_cell(CLICKER)
    button = cell.output.locator("button.harness-clicker")
    button.click()
    button.click()
    cell.output.locator("button.harness-clicker", has_text="clicks: 2").wait_for()
    assert nb.wait_until("w.clicks == 2") is True


def test_installed_config_loads_it_and_the_live_socket_has_nodelay(chromium):
    # The shipped jupyter_server_config.d file on the config path, as `pip install` puts it
    # into <prefix>/etc/jupyter; nothing passed on the command line.
    server = JupyterLabServer(
        server_extension=None,
        env={"JUPYTER_CONFIG_PATH": str(REPO_ROOT / "jupyter-config")},
        log_level="DEBUG",
    )
    with server, Lab(server, browser=chromium) as lab:
        _click_twice(lab)
        log = server.log_text()
    assert "sam_widget.server | extension was successfully loaded" in log
    assert "sam_widget.server: kernel websockets use TCP_NODELAY" in log
    values = LIVE_SOCKET.findall(log)
    assert values, "no kernel websocket was opened with the extension on"
    assert set(values) == {"1"}


def test_turned_off_by_its_config_trait(chromium):
    server = JupyterLabServer(
        server_extension=True,
        extra_args=["--SamWidgetServer.tcp_nodelay=False"],
        log_level="DEBUG",
    )
    with server, Lab(server, browser=chromium) as lab:
        _click_twice(lab)
        log = server.log_text()
    assert "sam_widget.server | extension was successfully loaded" in log
    assert "TCP_NODELAY off (SamWidgetServer.tcp_nodelay=False)" in log
    assert "kernel websockets use TCP_NODELAY" not in log
    assert LIVE_SOCKET.findall(log) == []
    assert "Connecting to kernel" in log  # a websocket did open, just without the option
