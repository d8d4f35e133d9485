"""sam_widget.server: the Jupyter server extension that sets TCP_NODELAY on kernel websockets.

Unit level: the connection subclass on a real tornado websocket over loopback, loading into a
real ServerApp (in a subprocess, as `jupyter server` would), the off switch, gateway servers,
and harmlessness where it cannot apply. The live JupyterLab check is in
tests/browser/test_server_extension.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.services.kernels.connection.base import BaseKernelWebsocketConnection
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application
from tornado.websocket import WebSocketHandler, websocket_connect
from traitlets.config import LoggingConfigurable

from sam_widget import server

REPO = Path(__file__).resolve().parents[1]


class RecordingConnection(BaseKernelWebsocketConnection):
    """A kernel websocket connection that records TCP_NODELAY as its connect() saw it."""

    seen: list = []

    def connect(self):
        RecordingConnection.seen.append(server.socket_nodelay(self.websocket_handler))
        return "connect-result"


async def _open_websocket(connection_class: type) -> tuple[bool | None, object]:
    """Open a real websocket over loopback whose server side builds `connection_class`."""
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    class Handler(WebSocketHandler):
        def open(self):
            connection = connection_class(websocket_handler=self)
            result = connection.connect()
            done.set_result((server.socket_nodelay(self), result))

    [sock] = bind_sockets(0, "127.0.0.1")
    http = HTTPServer(Application([(r"/ws", Handler)]))
    http.add_sockets([sock])
    port = sock.getsockname()[1]
    client = await websocket_connect(f"ws://127.0.0.1:{port}/ws")
    try:
        return await asyncio.wait_for(done, 60)
    finally:
        client.close()
        http.stop()
        await http.close_all_connections()


def _serve_once(connection_class: type) -> tuple[bool | None, object]:
    """Run `_open_websocket` on a fresh event loop in its own thread.

    A thread, because the session's browser tests (Playwright's sync API) may already run an
    event loop in this one, where asyncio.run() refuses to start.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _open_websocket(connection_class)).result()


def test_connection_subclass_sets_nodelay_on_the_live_socket():
    RecordingConnection.seen.clear()
    # Baseline: tornado leaves Nagle on, which is the 40 ms this extension removes.
    nodelay, result = _serve_once(RecordingConnection)
    assert nodelay is False
    assert result == "connect-result"

    nodelay, result = _serve_once(server.nodelay_connection_class(RecordingConnection))
    assert nodelay is True
    assert result == "connect-result"  # the base class's connect() result passes through
    assert RecordingConnection.seen == [False, True]  # set before the base connect() runs


def test_subclass_keeps_the_configured_class_and_is_made_once():
    for base in (ZMQChannelsWebsocketConnection, GatewayWebSocketConnection):
        cls = server.nodelay_connection_class(base)
        assert issubclass(cls, base) and cls is not base
        assert server.nodelay_connection_class(base) is cls
        assert server.nodelay_connection_class(cls) is cls
        assert cls.__name__ == "NoDelay" + base.__name__
    # the open-session registry (used at shutdown by close_all) stays the base class's
    zmq = server.nodelay_connection_class(ZMQChannelsWebsocketConnection)
    assert zmq._open_sessions is ZMQChannelsWebsocketConnection._open_sessions


def test_set_nodelay_never_raises_on_a_closed_handler(caplog):
    class Closed:
        ws_connection = None

        def set_nodelay(self, value):
            raise AssertionError("no connection")

    log = logging.getLogger("test-sam-widget-server")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert server.set_nodelay(Closed(), log) is False
    assert "TCP_NODELAY not set" in caplog.text
    assert server.socket_nodelay(Closed()) is None


class FakeServerApp(LoggingConfigurable):
    """Just what the extension reads from a ServerApp: log, config, web_app.settings."""

    def __init__(self, settings, **kwargs):
        super().__init__(**kwargs)
        self.web_app = type("WebApp", (), {"settings": settings})()
        self.log = logging.getLogger("test-sam-widget-server")


@pytest.mark.parametrize(
    "settings, reason",
    [
        ({}, "no connection class"),  # jupyter_server < 2 or another server
        ({server.SETTING: None}, "no connection class"),
        ({server.SETTING: object}, "has no connect()"),
        ({server.SETTING: type("NoHandler", (), {"connect": lambda self: None})}, "no websocket"),
    ],
)
def test_not_applicable_changes_nothing_and_logs_debug(settings, reason, caplog):
    before = dict(settings)
    app = FakeServerApp(settings)
    with caplog.at_level(logging.DEBUG, logger=app.log.name):
        server._load_jupyter_server_extension(app)
    assert app.web_app.settings == before
    [record] = [r for r in caplog.records if "sam_widget.server" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert reason in record.getMessage()


def test_load_replaces_the_setting_and_the_trait_turns_it_off(caplog):
    from traitlets.config import Config

    app = FakeServerApp({server.SETTING: ZMQChannelsWebsocketConnection})
    with caplog.at_level(logging.INFO, logger=app.log.name):
        server._load_jupyter_server_extension(app)
    assert app.web_app.settings[server.SETTING] is server.nodelay_connection_class(
        ZMQChannelsWebsocketConnection
    )
    assert "kernel websockets use TCP_NODELAY" in caplog.text

    off = Config()
    off.SamWidgetServer.tcp_nodelay = False
    app = FakeServerApp({server.SETTING: ZMQChannelsWebsocketConnection}, config=off)
    server._load_jupyter_server_extension(app)
    assert app.web_app.settings[server.SETTING] is ZMQChannelsWebsocketConnection


def test_extension_points_and_the_shipped_config_file():
    assert server._jupyter_server_extension_points() == [{"module": "sam_widget.server"}]
    path = REPO / "jupyter-config" / "jupyter_server_config.d" / "sam_widget.json"
    config = json.loads(path.read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {"sam_widget.server": True}}}
    pyproject = (REPO / "pyproject.toml").read_text()
    assert (
        '"jupyter-config/jupyter_server_config.d/sam_widget.json" = '
        '"etc/jupyter/jupyter_server_config.d/sam_widget.json"'
    ) in pyproject


SERVERAPP_SCRIPT = textwrap.dedent(
    """
    import sys
    from jupyter_server.serverapp import ServerApp
    app = ServerApp()
    app.initialize(argv=sys.argv[1:], find_extensions=True, new_httpserver=False)
    cls = app.web_app.settings["kernel_websocket_connection_class"]
    print("CLASS", cls.__module__ + "." + cls.__name__)
    """
)


def _serverapp_class(
    tmp_path: Path, *args: str, config_path: Path | None = None
) -> tuple[str, str]:
    """Initialize a real ServerApp in a subprocess; its connection class and its log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    env["JUPYTER_CONFIG_PATH"] = str(config_path) if config_path else ""
    argv = [f"--ServerApp.root_dir={tmp_path}", "--ServerApp.log_level=DEBUG", *args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    proc = subprocess.run(
        [sys.executable, "-c", SERVERAPP_SCRIPT, *argv],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("CLASS ")]
    return line.split()[1], proc.stderr


def test_a_real_serverapp_loads_it_from_the_shipped_config_file(tmp_path):
    # The shipped file on the config path, as `pip install` puts it into etc/jupyter.
    cls, log = _serverapp_class(tmp_path, config_path=REPO / "jupyter-config")
    assert cls == "sam_widget.server.NoDelayZMQChannelsWebsocketConnection"
    assert "sam_widget.server | extension was successfully loaded" in log
    assert "kernel websockets use TCP_NODELAY" in log


def test_a_real_serverapp_with_it_turned_off(tmp_path):
    enabled = "--ServerApp.jpserver_extensions=sam_widget.server=True"
    cls, log = _serverapp_class(tmp_path, enabled, "--SamWidgetServer.tcp_nodelay=False")
    assert (
        cls == "jupyter_server.services.kernels.connection.channels.ZMQChannelsWebsocketConnection"
    )
    assert "TCP_NODELAY off (SamWidgetServer.tcp_nodelay=False)" in log
    # disabling the extension itself wins over the shipped config file
    cls, log = _serverapp_class(
        tmp_path,
        "--ServerApp.jpserver_extensions=sam_widget.server=False",
        config_path=REPO / "jupyter-config",
    )
    assert cls.endswith(".ZMQChannelsWebsocketConnection") and "NoDelay" not in cls
    assert "kernel websockets use TCP_NODELAY" not in log


def test_a_real_gateway_serverapp_keeps_the_gateway_connection(tmp_path):
    cls, _ = _serverapp_class(
        tmp_path,
        "--ServerApp.jpserver_extensions=sam_widget.server=True",
        "--GatewayClient.url=http://127.0.0.1:9",
    )
    assert cls == "sam_widget.server.NoDelayGatewayWebSocketConnection"
