"""The widget's background work: encode the shown image, decode prompts, hover, prefetch.

`BackgroundWork` is the half of `SamWidget` that runs on its two threads. The worker thread
encodes the image being shown (once), decodes only the latest prompt state (bursts coalesce),
answers hover requests in between and runs the "Everything" button. The prefetch thread encodes
the next images of a dataset while the user works; it is a thread of its own so that a click's
decode never waits behind a whole encode (torch releases the GIL while it computes). When the
user moves to an image that is not encoded yet, a prefetch encoding another image is cancelled
within one encoder block (``Predictor.encode(cancel=...)``), so the shown image's encode never
queues behind it; the cancelled image is encoded again when it is near.

Every engine call passes the image's own handle (``engine.encode`` / ``predict(image=...)``),
so a shared engine (two widgets, a cell calling ``set_image``) never changes what a prompt is
decoded on. Errors never kill a thread: they are logged (logger ``sam_widget``), shown in the
status line and raised from the Python call that waited for them.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any

import numpy as np

from .codec import encode_masks
from .predictor import EncodeCancelled
from .session import ImageSession, PromptError, entry_display_masks, quote
from .wire import to_wire

logger = logging.getLogger("sam_widget")



class _Stopped(Exception):
    """The user pressed Stop during "Everything" (args: batches done, total)."""


#: images after the current one that are encoded ahead (the second only when idle)
PREFETCH = 2
#: a thread with nothing to do for this long ends (and is started again when needed)
IDLE_EXIT_S = 30.0


def lower_priority(step: int = 10) -> None:
    """Make the calling thread (and the compute threads it starts from now on, which inherit it)
    yield the CPU to the others: on Linux its nice value goes up by ``step``. The prefetch
    thread calls it, so a click's decode gets the cores while a prefetch encodes."""
    try:
        import os

        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (AttributeError, OSError):  # not Linux, or not allowed: same priority as the rest
        pass


_last_trim = [0.0]


def give_back_memory(min_interval: float = 2.0) -> None:
    """Hand freed heap memory back to the system (glibc keeps freed arrays of the undo
    history's size in its arenas, so resident memory would grow with every click although
    the history is bounded); at most every ``min_interval`` seconds, a no-op elsewhere."""
    now = time.monotonic()
    if now - _last_trim[0] < min_interval:
        return
    _last_trim[0] = now
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def _free_accelerator_memory() -> None:
    """After a failed encode: give cached CUDA blocks back so a retry can fit."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


def encode_error(exc: BaseException, name: str) -> str:
    """What to show (and raise) when encoding an image failed: what happened, what to try."""
    what = f"encoding {name} failed: {type(exc).__name__}: {quote(str(exc))[1:-1]}"
    if _out_of_memory(exc):
        return (f"{what}. The model ran out of memory: try a smaller model "
                "(model='mobile_sam'), device='cpu', or a smaller image; w.retry() tries again")
    return f"{what}. w.retry() tries again"


class BackgroundWork:
    """Mixin of `SamWidget`: its threads. Uses the widget's lock ``_cv``, its session and its
    ``_write``/``_report``/``_publish_*`` helpers."""

    # ------------------------------------------------------------------ engine calls
    def _handle_for(self, img: ImageSession, rgb: np.ndarray) -> Any:
        """Encode (or take from the engine's cache) without touching its current image."""
        encode = getattr(self._engine, "encode", None)
        if encode is not None:
            return encode(rgb)
        self._engine.set_image(rgb)  # an engine without handles: one image at a time
        return None

    def _predict(self, handle: Any, points: list, box: list | None,
                 mask_input: np.ndarray | None, multimask: bool):
        pts = np.asarray([p[:2] for p in points], np.float32) if points else None
        labels = np.asarray([p[2] for p in points], np.int64) if points else None
        box_arr = None if box is None else np.asarray(box, np.float32)
        image = {} if handle is None else {"image": handle}
        return self._engine.predict(points=pts, labels=labels, box=box_arr,
                                    mask_input=mask_input, multimask=multimask, **image)

    # ------------------------------------------------------------------ threads
    def _kick(self) -> None:
        """Something changed: wake the threads, starting any that ended for idleness (a
        widget nobody uses, e.g. from a cell run again without close(), holds no thread)."""
        with self._cv:
            self._cv.notify_all()
            if self._closed:
                return
            for attr, target, name in (("_worker", self._work, "sam-widget"),
                                       ("_prefetcher", self._prefetch, "sam-widget-prefetch")):
                if not self._running[attr]:
                    self._running[attr] = True
                    thread = threading.Thread(target=target, name=name, daemon=True)
                    setattr(self, attr, thread)
                    thread.start()

    def _idle_wait(self, attr: str, busy) -> bool:
        """Wait (holding ``_cv``) until ``busy()`` or closed; False when the thread should end:
        closed, or idle for `IDLE_EXIT_S` seconds."""
        since = time.monotonic()
        while not self._closed and not busy():
            left = IDLE_EXIT_S - (time.monotonic() - since)
            if left <= 0:
                self._running[attr] = False
                return False
            self._cv.wait(left)
        if self._closed:
            self._running[attr] = False
            return False
        return True

    def _work(self) -> None:
        while True:
            with self._cv:
                if not self._idle_wait("_worker", lambda: self._next_job() is not None):
                    return
                job = self._next_job()
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
                self._report(exc, "background work")

    def _next_job(self):
        img = self._session.current
        if self._rgb is None:  # unreadable image: nothing to compute, hovers get no mask
            return self._drop_hover if self._hover_req else None
        if img.handle is None and img.error is None and not self._no_handle_ready():
            return self._encode_current
        encoded = self._encoded()
        if encoded and self._dirty:
            return self._decode_current
        if self._hover_req is not None:
            return self._decode_hover if encoded else self._drop_hover
        if encoded and self._everything:
            return self._run_everything
        return None

    def _no_handle_ready(self) -> bool:
        # engines without handles: encoded when their current image is ours
        return self._handleless is not None and self._handleless == self._session.index

    def _encoded(self) -> bool:
        img = self._session.current
        return img.error is None and (img.handle is not None or self._no_handle_ready())

    def _encode_current(self) -> None:
        with self._cv:
            img, rgb, gen = self._session.current, self._rgb, self._image_gen
            self._cancel_prefetch_of_others(self._session.index)
        start = time.perf_counter()
        done = threading.Event()

        def tick() -> None:  # the visible "encoding… 3.2 s · vit_b on cpu"
            while not done.wait(0.25):
                self._write(message=f"encoding… {time.perf_counter() - start:.1f} s · "
                                    f"{self.engine} on {self.device}")

        self._write(status="encoding",
                    message=f"encoding… 0.0 s · {self.engine} on {self.device}")
        ticker = threading.Thread(target=tick, name="sam-widget-ticker", daemon=True)
        ticker.start()
        try:
            handle = self._handle_for(img, rgb)
        except BaseException as exc:  # noqa: BLE001 - OOM, KeyboardInterrupt...: retryable
            _free_accelerator_memory()
            logger.error("sam_widget: encoding %s failed", img.name, exc_info=exc)
            with self._cv:
                img.error = encode_error(exc, repr(img.name))
                img.encode_exc = exc
                if gen == self._image_gen:
                    self._write(status=f"error: {img.error}", message=f"error: {img.error}")
                self._kick()
            return
        finally:
            done.set()
            ticker.join()
        with self._cv:
            self._encode_seconds = time.perf_counter() - start
            if handle is None:
                self._handleless = img.index
            img.handle = handle
            if gen == self._image_gen:
                self._write(status="ready", message=self._ready_message())
            self._kick()

    def _ready_message(self) -> str:
        took = getattr(self, "_encode_seconds", 0.0)
        engine = self.engine
        if engine == "classic":  # say plainly that this is not SAM (issue: works offline)
            # never "see the warning": Voila and `marimo run` hide warnings (the notice says how)
            engine = "classic (weights-free, not SAM)"
        text = f"ready · {engine} on {self.device} · encoded in {took:.1f} s"
        nxt = self._session.images.get(self._session.index + 1)
        if nxt is not None and nxt.handle is not None:
            text += " · next image ready"
        return text

    def _decode_current(self) -> None:
        t0 = time.perf_counter()
        with self._cv:
            img = self._session.current
            rev, entry, handle = self._session.rev, img.current, img.handle
            self._trace(rev, decode_start=time.time())
            mask_input = entry.mask_input
            if entry.prediction is None and not entry.empty and mask_input is None:
                mask_input = img.mask_input() if self.refine else None
            multimask = bool(self.multimask)
            hovered = None
            if entry.prediction is None and not entry.empty:
                hovered = self._hovered(entry.points, entry.box, mask_input, multimask)
        try:
            masks = None
            if entry.empty:
                pred = None
            elif entry.prediction is not None:
                pred = entry.prediction  # undo/redo to a state answered before: no decode
            elif hovered is not None:  # the hover preview already decoded this click
                pred, masks = hovered
                self.stats["hover_reused"] += 1
                if entry.strokes:  # the brush's edits, carried to this prompt
                    masks = entry_display_masks(entry, self.display_height, self.display_width,
                                                pred)
            else:
                pred = self._predict(handle, entry.points, entry.box, mask_input, multimask)
                self.stats["decodes"] += 1
            if pred is None:
                data, scores, best = b"", [], 0
            else:
                if masks is None:
                    masks = entry_display_masks(entry, self.display_height, self.display_width,
                                                pred)
                data = encode_masks(masks)
                scores = [float(s) for s in np.asarray(pred.scores).reshape(-1)]
                best = entry.selected if entry.prediction is not None else pred.best
        except BaseException as exc:  # noqa: BLE001 - shown, raised to the waiting caller
            with self._cv:
                if rev == self._session.rev:
                    self._dirty = False
                    self._failed_rev = (rev, exc)
                    self._report(exc, "predict")
                    self._write(mask_rev=rev)
                    self._kick()
            return
        with self._cv:
            dropped = 0
            if entry.prediction is None and pred is not None:
                entry.answer(pred, mask_input, best, multimask)
                dropped = img.trim()
            if rev != self._session.rev:  # prompts changed while decoding: publish the latest
                self.stats["coalesced"] += 1
                return
            self._dirty = False
            self._failed_rev = None
            values = {"scores": scores, "_masks": data, "mask_rev": rev, "selected": best}
            if self.status.startswith("error"):
                values.update(status="ready", message=self._ready_message())
            self._write(**values)
            self._trace(rev, sent=time.time())
            self.stats["last_prompt_s"] = time.perf_counter() - t0
            self.stats["last_bytes"] = len(data)
            pending_commit = self._pending_commit
            self._kick()
        if dropped:
            give_back_memory()
        if pending_commit:
            self._commit_now()

    # ------------------------------------------------------------------ hover
    def _request_hover(self, content: dict) -> None:
        from .session import _number

        x = _number(self._field(content, "x", "hover"), "hover x")
        y = _number(self._field(content, "y", "hover"), "hover y")
        with self._cv:
            self.stats["hover_requests"] += 1
            self._hover_in_flight += 1
            self.stats["hover_in_flight_max"] = max(self.stats["hover_in_flight_max"],
                                                    self._hover_in_flight)
            if self._hover_req is not None:  # superseded before we got to it: drop it
                self._answer_hover(self._hover_req, None)
            self._hover_req = {"seq": content.get("seq", 0), "x": x, "y": y}
            self._kick()

    def _answer_hover(self, req: dict, data: bytes | None) -> None:
        self._hover_in_flight = max(0, self._hover_in_flight - 1)
        self.stats["hover_answers"] += 1
        msg = {"type": "hover", "seq": req["seq"], "rev": req.get("rev", self._session.rev),
               "empty": data is None}
        if data is not None and self._wire == "base64":  # a host without binary buffers
            msg["data"] = to_wire(data, "base64")
            data = None
        if not self._closed:
            self.send(msg, buffers=[data] if data is not None else None)

    def _drop_hover(self) -> None:
        with self._cv:
            req, self._hover_req = self._hover_req, None
            if req is not None:
                self._answer_hover(req, None)

    def _decode_hover(self) -> None:
        with self._cv:
            req, self._hover_req = self._hover_req, None
            if req is None:
                return
            img = self._session.current
            entry, handle = img.current, img.handle
            req["rev"] = self._session.rev
            mask_input = img.mask_input(img.pos + 1) if self.refine else None
            points = [*entry.points, [req["x"], req["y"], 1]]
            box = entry.box
            multimask = bool(self.multimask)
            key = self._request_key(points, box, multimask)
        data = None
        try:
            if self.hover:
                pred = self._predict(handle, points, box, mask_input, multimask)
                masks = pred.masks_at(self.display_height, self.display_width)
                data = encode_masks(masks[pred.best])
                with self._cv:  # a click right here will ask for exactly this prediction
                    self._hover_cache = (key, mask_input, pred, masks)
        except BaseException as exc:  # noqa: BLE001
            self._report(exc, "hover")
        with self._cv:
            self._answer_hover(req, data)

    def _request_key(self, points: list, box: list | None, multimask: bool) -> tuple:
        """What a decode depends on besides mask_input: the image, prompts and multimask."""
        return (
            self._image_gen,
            tuple(tuple(float(v) for v in p) for p in points),
            None if box is None else tuple(float(v) for v in box),
            multimask,
        )

    def _hovered(self, points: list, box: list | None, mask_input: np.ndarray | None,
                 multimask: bool):
        """The hover preview's (prediction, display masks) when it decoded this very request
        (the pointer clicked where it rested), else None."""
        cached = self._hover_cache
        if cached is None or cached[0] != self._request_key(points, box, multimask):
            return None
        if (cached[1] is None) != (mask_input is None) or (
            mask_input is not None and not np.array_equal(cached[1], mask_input)
        ):
            return None
        return cached[2], cached[3]

    # ------------------------------------------------------------------ everything
    def _run_everything(self) -> None:
        """The "Everything" button's run: progress and masks found so far in the status line,
        the view's Stop honoured after the batch in flight."""
        found = [0]

        def progress(done: int, total: int) -> None:
            if self._stop_everything:
                raise _Stopped(done, total)
            self._write(message=f"segmenting everything… {done}/{total} batches of points · "
                                f"{found[0]} masks found so far")

        try:
            self._write(message="segmenting everything…", everything_state="running")
            added = self.segment_everything(progress=progress, found=found,
                                            **self.everything_settings)
            self._write(message=f"everything: {len(added)} masks added as objects · "
                                f"{self._ready_message()}")
        except _Stopped as stop:
            self._write(message=f"everything stopped after {stop.args[0]}/{stop.args[1]} "
                                f"batches; nothing added · {self._ready_message()}")
        except BaseException as exc:  # noqa: BLE001
            self._report(exc, "everything")
        finally:
            with self._cv:
                self._everything = False
                self._stop_everything = False
                self._write(everything_state="ready")
                self._kick()

    # ------------------------------------------------------------------ prefetch thread
    def _prefetch_target(self) -> int | None:
        """The next image to encode ahead: i+1 once the current image is encoded, i+2 only
        while no prompt waits for its answer."""
        if self._closed or getattr(self._engine, "encode", None) is None:
            return None
        if not self._encoded():
            return None
        n = len(self._session)
        for k in range(1, PREFETCH + 1):
            j = self._session.index + k
            if j >= n:
                return None
            img = self._session.image(j)
            if img.handle is None and img.error is None:
                return j if k == 1 or not self._dirty else None
        return None

    def _encode_ahead(self, rgb: np.ndarray, cancel: threading.Event) -> Any:
        """The prefetch's encode, cancellable where the engine allows (`Predictor.encode`)."""
        encode = self._engine.encode
        if "cancel" in inspect.signature(encode).parameters:
            return encode(rgb, cancel=cancel)
        return encode(rgb)

    def _cancel_prefetch_of_others(self, index: int) -> None:
        """The shown image ``index`` needs the encoder: a prefetch encoding another image
        stops (within one encoder block) instead of making the user wait for it."""
        busy = getattr(self, "_prefetching", None)
        if busy is not None and busy[0] != index:
            busy[1].set()

    def _prefetch(self) -> None:
        lower_priority()
        while True:
            with self._cv:
                if not self._idle_wait("_prefetcher",
                                       lambda: self._prefetch_target() is not None):
                    return
                j = self._prefetch_target()
                img = self._session.image(j)
            cancel = threading.Event()
            with self._cv:
                self._prefetching = (j, cancel)
            try:
                rgb = self._load(j)
                handle = self._encode_ahead(rgb, cancel)
                # what moving there would do next, so the first click waits for neither
                prepare = getattr(self._engine, "prepare", None)
                if prepare is not None:
                    prepare(handle)
                self._display(j, rgb)
            except EncodeCancelled:  # the user moved to an image not encoded yet: later
                with self._cv:
                    self._prefetching = None
                    self.stats["prefetch_cancelled"] += 1
                    self._kick()
                continue
            except BaseException as exc:  # noqa: BLE001 - shown when the user gets there
                _free_accelerator_memory()
                with self._cv:
                    self._prefetching = None
                    if isinstance(exc, PromptError) or type(exc).__name__ == "ImageError":
                        img.error = f"cannot read {img.name!r}: {exc}"
                    else:
                        img.error = encode_error(exc, repr(img.name))
                    self._kick()
                continue
            with self._cv:
                self._prefetching = None
                if abs(j - self._session.index) <= PREFETCH:  # still near: keep it
                    img.handle = handle
                    self.stats["prefetched"] += 1
                    if j == self._session.index + 1 and self.status == "ready":
                        self._write(message=self._ready_message())
                self._kick()
