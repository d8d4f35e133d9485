"""The view's side of the wire: what a frontend may change, and the messages it sends.

`ViewProtocol` is the half of `SamWidget` that reads a view. A view may change only the traits
in `VIEW_TRAITS`, each checked (anything else is refused and sent back as the kernel has it).
Its custom messages ("prompt", "undo", "redo", "clear", "commit", "object", "everything",
"stop", "stroke", "dismiss", "hover") carry ``client`` and ``seq`` (per view, increasing) and,
but for "hover", "everything", "stop" and "dismiss", ``rev``: the ``prompt_rev`` the view had
seen. A message based on a state that changed since (by Python, another view, navigation) is
dropped; a view's own burst, based on the revision before its earlier unacknowledged messages,
is not. "wire-probe" and "wire" (binary buffers or base64, sam_widget/wire.py) are answered
outside this order. Every message is acknowledged
through the ``prompt_seq`` trait ("client:seq"), also when it was dropped or refused.
"""

from __future__ import annotations

import time
from typing import Any

import traitlets as t

from .session import PromptError, quote, validate_box, validate_points
from .wire import probe_answer

#: traits a view may change (everything else is the kernel's)
VIEW_TRAITS = frozenset({"points", "box", "selected", "opacity", "hover", "refine", "multimask",
                         "index", "label", "_view_rev"})
#: custom message types a view may send (besides "hover")
MESSAGES = ("prompt", "undo", "redo", "clear", "commit", "object", "everything", "stop",
            "stroke", "dismiss")


class ViewProtocol:
    """Mixin of `SamWidget`: trait changes and custom messages from views."""

    def set_state(self, sync_data: dict) -> None:
        """A view's trait changes: only `VIEW_TRAITS`, each checked; the rest is undone."""
        refused = [k for k in sync_data if k not in VIEW_TRAITS]
        allowed = {k: v for k, v in sync_data.items() if k in VIEW_TRAITS}
        if self._closed:
            return
        for key in list(allowed):
            try:
                self._check_view_value(key, allowed[key])
            except (PromptError, ValueError, TypeError, t.TraitError) as exc:
                allowed.pop(key)
                refused.append(key)
                self._report(exc, f"bad {key} from the view")
        if refused:
            self.stats["refused"] += 1
            if not any(self.status.startswith(f"error: bad {k}") for k in refused):
                names = ", ".join(quote(k, 40) for k in refused[:5])
                self._report(PromptError(f"the view may not change {names}"), "refused")
            self.send_state([k for k in refused if self.has_trait(k)] or None)
        if allowed:
            super().set_state(allowed)  # type: ignore[misc]

    def _check_view_value(self, key: str, value: Any) -> None:
        w, h = self._size
        if key == "points":
            validate_points(value, w, h)
        elif key == "box":
            validate_box(value, w, h)
        elif key == "opacity":
            from .widget import _check_opacity

            _check_opacity(value)
        elif key in ("hover", "refine", "multimask") and not isinstance(value, bool):
            raise PromptError(f"{key} must be true or false, got {quote(value)}")
        elif key == "index":
            self._session.check_index(value)
        elif key == "label":
            self._session.check_label(value)
        elif key == "selected":
            if isinstance(value, bool) or not isinstance(value, int):
                raise PromptError(f"selected must be an int, got {quote(value)}")

    @staticmethod
    def _field(content: dict, name: str, kind: str) -> Any:
        if name not in content:
            raise PromptError(f"{kind} message is missing the field {name!r}")
        return content[name]

    def _stale(self, client: str, base: Any) -> bool:
        """Whether a view's message was based on a state that has changed since (by anyone but
        that view's own later messages)."""
        if isinstance(base, bool) or not isinstance(base, int):
            raise PromptError(f"rev must be an int, got {quote(base)}")
        rev = self._session.rev
        chain_client, chain_start = self._chain
        return not (base == rev or (client == chain_client and chain_start <= base <= rev))

    def _on_frontend_msg(self, _widget: Any, content: Any, buffers: list) -> None:
        if self._closed:
            return
        seq = None
        try:
            if not isinstance(content, dict):
                raise PromptError(f"message must be an object, got {type(content).__name__}")
            kind = self._field(content, "type", "a")
            client = str(content.get("client", ""))[:64]
            number = content.get("seq", 0)
            if isinstance(number, bool) or not isinstance(number, int):
                raise PromptError(f"seq must be an int, got {quote(number)}")
            seq = f"{client}:{number}"
            if kind == "hover":
                self._request_hover(content)
                return
            if kind == "wire-probe":  # the view tests binary buffers (sam_widget/wire.py)
                msg, probe = probe_answer(content, buffers)
                self.send(msg, buffers=probe)
                return
            if kind == "wire":
                self.set_wire(str(content.get("mode", "")))
                return
            if kind not in MESSAGES:
                raise PromptError(f"unknown message type {quote(kind, 60)}")
            with self._cv:
                if number <= self._last_seq.get(client, -1):  # out of order: already past it
                    self.stats["stale"] += 1
                    return
                self._last_seq[client] = number
                if kind not in ("everything", "stop", "dismiss") and self._stale(
                        client, self._field(content, "rev", kind)):
                    self.stats["stale"] += 1
                    self._write(prompt_seq=seq)  # the view drops its local state
                    return
                self._handle(kind, content, client, seq)
        except Exception as exc:  # noqa: BLE001 - never a dead widget: say what was wrong
            self._report(exc, "bad message from the view")
            if seq is not None:
                self._write(prompt_seq=seq)  # handled (refused): the view drops its local state

    def _handle(self, kind: str, content: dict, client: str, seq: str) -> None:
        if kind == "prompt":
            w, h = self._size
            points = validate_points(self._field(content, "points", kind), w, h)
            box = validate_box(self._field(content, "box", kind), w, h)
            received = time.time()
            self._prompt(points, box, client=client, seq=seq, wait=False)
            self._trace(self._session.rev, received=received)
        elif kind in ("undo", "redo", "clear"):
            self._edit(kind, client=client, seq=seq)
        elif kind == "commit":
            label = content.get("label", ...)
            if label is not ...:
                label = self._session.check_label(label)
            if self._dirty:  # commit once the current prompts are answered
                self._pending_commit = True
            else:
                self._commit(label=label, client=client)
            self._write(prompt_seq=seq)
        elif kind == "object":
            oid = self._field(content, "id", kind)
            self._session.current.find(oid)
            if content.get("delete"):
                self._object_edit(oid, None, client)
            elif "label" in content:
                label = self._session.check_label(content["label"])
                self._object_edit(oid, {"label": label,
                                        "color": self._session.color(label, oid)}, client)
            else:
                self._object_edit(oid, {"visible": bool(content.get("visible", True))},
                                  client)
            self._write(prompt_seq=seq)
        elif kind == "everything":  # stored masks at once, else a run (sam_widget.editing)
            self._write(prompt_seq=seq)
            self._press_everything()
        elif kind == "stop":  # ends "Everything" after the batch in flight
            self._stop_everything = True
            self._write(prompt_seq=seq)
        elif kind == "dismiss":  # the notice (e.g. missing weights) was read
            self._write(notice="", prompt_seq=seq)
        elif kind == "stroke":  # brush or eraser (sam_widget.strokes)
            stroke = {k: content.get(k) for k in ("mode", "radius", "points")}
            target = content.get("target")
            if target is not None:
                self._session.current.find(target)
            self._stroke(stroke, target, client, seq=seq)
