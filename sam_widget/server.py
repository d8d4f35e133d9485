"""Jupyter server extension: kernel websockets with TCP_NODELAY, for live widget round trips.

jupyter_server never sets TCP_NODELAY on kernel websockets, so a small kernel reply (a widget's
answer to a click) can wait for the browser's delayed ACK under Nagle's algorithm: about 40 ms
per round trip on Linux. This extension turns Nagle off on each kernel websocket when it opens.

How, least intrusively: jupyter_server creates one *kernel websocket connection* object per
websocket from the class in the documented web-app setting ``kernel_websocket_connection_class``
(the ``ServerApp.kernel_websocket_connection_class`` trait; the gateway's class when a gateway is
configured). At load time we replace that setting with a subclass of whatever class is there
whose ``connect()`` first calls tornado's public ``WebSocketHandler.set_nodelay(True)``. Nothing
is patched; every other behaviour is the configured class's own.

Installed with sam-widget, the extension is enabled by
``etc/jupyter/jupyter_server_config.d/sam_widget.json``. Turn it off with

    c.SamWidgetServer.tcp_nodelay = False          # jupyter_server_config.py
    jupyter lab --SamWidgetServer.tcp_nodelay=False

or disable the whole extension: ``jupyter server extension disable sam_widget.server``.
Where it cannot apply (a server without that setting, a connection class without
``connect``/``websocket_handler``, a transport without sockets) it logs one debug line and
changes nothing.
"""

from __future__ import annotations

import socket
from typing import Any

from traitlets import Bool
from traitlets.config import LoggingConfigurable

#: The web-app setting (jupyter_server >= 2.0) naming the kernel websocket connection class.
SETTING = "kernel_websocket_connection_class"

_LOG_PREFIX = "sam_widget.server:"

# one subclass per base class, so reloading the extension never stacks subclasses
_SUBCLASSES: dict[type, type] = {}


class SamWidgetServer(LoggingConfigurable):
    """Configuration of sam-widget's Jupyter server extension."""

    tcp_nodelay = Bool(
        True,
        config=True,
        help=(
            "Set TCP_NODELAY on kernel websockets (turns off Nagle's algorithm), so small kernel "
            "replies such as widget updates are sent at once instead of waiting up to ~40 ms "
            "for the browser's delayed ACK. Set False to keep jupyter_server's default."
        ),
    )


def socket_nodelay(handler: Any) -> bool | None:
    """Whether TCP_NODELAY is set on the TCP socket under a tornado websocket handler.

    None when the handler has no open TCP socket (closed, or not a TCP transport).
    """
    ws = getattr(handler, "ws_connection", None)
    sock = getattr(getattr(ws, "stream", None), "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except OSError:
        return None


def set_nodelay(handler: Any, log: Any = None) -> bool:
    """Set TCP_NODELAY on an open tornado websocket handler's socket; True when it took effect.

    Never raises: a handler that cannot take it (closed, no TCP socket) is left as it is, with a
    debug line in `log`.
    """
    try:
        handler.set_nodelay(True)
    except Exception as exc:  # closed stream, another transport, an old handler
        if log is not None:
            log.debug("%s TCP_NODELAY not set on %r: %s", _LOG_PREFIX, handler, exc)
        return False
    on = socket_nodelay(handler)
    if log is not None:
        log.debug(
            "%s kernel websocket %s: TCP_NODELAY=%s",
            _LOG_PREFIX,
            getattr(handler, "request", None) and handler.request.path,
            {True: 1, False: 0, None: "n/a"}[on],
        )
    return bool(on)


def nodelay_connection_class(base: type) -> type:
    """A subclass of kernel websocket connection class `base` whose connect() sets TCP_NODELAY.

    `base` is e.g. jupyter_server's ZMQChannelsWebsocketConnection or the gateway's
    GatewayWebSocketConnection; everything but the socket option is `base`'s behaviour.
    Idempotent: passing a class this function made returns it unchanged.
    """
    if getattr(base, "_sam_widget_nodelay", False):
        return base
    if base in _SUBCLASSES:
        return _SUBCLASSES[base]

    def connect(self):  # the base returns a future / awaitable; pass it through unchanged
        set_nodelay(self.websocket_handler, self.log)
        return super(cls, self).connect()

    connect.__doc__ = f"Set TCP_NODELAY on the websocket, then {base.__name__}.connect()."
    cls = type(
        f"NoDelay{base.__name__}",
        (base,),
        {
            "connect": connect,
            "_sam_widget_nodelay": True,
            "__module__": __name__,
            "__doc__": f"{base.__name__} with TCP_NODELAY on its websocket (sam_widget.server).",
        },
    )
    _SUBCLASSES[base] = cls
    return cls


def _applicable(base: Any) -> str | None:
    """Why `base` cannot be wrapped (None when it can)."""
    if not isinstance(base, type):
        return f"no connection class in web-app setting {SETTING!r} (jupyter_server < 2?)"
    if not callable(getattr(base, "connect", None)):
        return f"{base.__name__} has no connect()"
    if "websocket_handler" not in getattr(base, "class_traits", lambda: {})():
        return f"{base.__name__} has no websocket_handler trait"
    return None


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Install the TCP_NODELAY connection class into a running ServerApp's web application."""
    log = serverapp.log
    config = SamWidgetServer(parent=serverapp)
    if not config.tcp_nodelay:
        log.info("%s TCP_NODELAY off (SamWidgetServer.tcp_nodelay=False)", _LOG_PREFIX)
        return
    settings = getattr(getattr(serverapp, "web_app", None), "settings", None)
    if not isinstance(settings, dict):
        log.debug("%s no web application settings; nothing changed", _LOG_PREFIX)
        return
    base = settings.get(SETTING)
    reason = _applicable(base)
    if reason is not None:
        log.debug("%s not applicable, nothing changed: %s", _LOG_PREFIX, reason)
        return
    settings[SETTING] = nodelay_connection_class(base)
    log.info(
        "%s kernel websockets use TCP_NODELAY (%s.%s); turn off with "
        "SamWidgetServer.tcp_nodelay=False",
        _LOG_PREFIX,
        base.__module__,
        base.__qualname__,
    )


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The extension point Jupyter server discovers (module ``sam_widget.server``)."""
    return [{"module": "sam_widget.server"}]


# jupyter_server < 2 and the classic notebook server look for these names
load_jupyter_server_extension = _load_jupyter_server_extension
_jupyter_server_extension_paths = _jupyter_server_extension_points
