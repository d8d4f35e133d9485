"""The widget's annotations out and back in: COCO, the saved folder, resuming from one.

`Exports` is the half of `SamWidget` that turns its session into files (``sam_widget.export``
does the formats): one image gets `export.save` / `export.to_coco`; a dataset gets
`export.save_dataset` / `export.dataset_to_coco`, and ``SamWidget(ds, annotations=...)`` reads
them back with `export.load_annotations`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class Exports:
    """Mixin of `SamWidget`: ``to_coco``, ``save`` and resuming saved annotations."""

    def to_coco(self, **kwargs: Any) -> dict:
        """COCO dict: the whole dataset when there are several images (images with file names
        and sizes, annotations with RLE, categories from the labels); for one image its
        objects (or else the current mask), as ``sw.export.to_coco`` makes it."""
        from . import export

        if len(self._session) > 1:
            return export.dataset_to_coco(self._image_records(), self.annotations,
                                          list(self._session.labels), **kwargs)
        masks, scores, prompts = self._export_items()
        return export.to_coco(masks, scores=scores, prompts=prompts, **kwargs)

    def _image_records(self) -> list[dict]:
        """{"file_name", "height", "width"} of every image (sizes from objects or headers)."""
        records = []
        for i, name in enumerate(self._session.names):
            img = self._session.images.get(i)
            if img is not None and img.objects:
                h, w = img.objects[0]["mask"].shape
            else:
                h, w = self._rgbs[i].shape[:2] if i in self._rgbs else self._dataset.size(i)
            records.append({"file_name": name, "height": int(h), "width": int(w)})
        return records

    def _export_items(self) -> tuple[np.ndarray, list[float] | None, list[dict]]:
        """Masks (N, H, W), scores and prompt records of the objects, else of the current mask."""
        objects = self._session.current.objects
        if objects:
            masks = np.stack([o["mask"] for o in objects])
            scores = [o["score"] for o in objects]
            prompts = [{"points": o["points"], "box": o["box"], "steps": o.get("steps", []),
                        "strokes": o.get("strokes", []),
                        "label": o.get("label")} for o in objects]
        else:
            masks = self.mask[None]
            scores = [float(self.scores[self.selected])] if self.scores else None
            with self._cv:
                steps = self._session.current.steps(bool(self.refine))
                strokes = [dict(x) for x in self._session.current.current.strokes]
            prompts = [{"points": self.points, "box": self.box, "steps": steps,
                        "strokes": strokes}]
        return masks, scores, prompts

    def save(self, path: str | Path) -> Path:
        """Save the annotations; works at any time, also while an encode runs or after close().

        With several images, ``path`` is a folder: COCO json, YOLO-seg (``labels/`` and
        ``data.yaml``), label PNGs and the prompt log of every image (`export.save_dataset`;
        each file written atomically). With one image, a path without a suffix (or an existing
        folder) gets image, COCO JSON, polygons, label PNG, cut-outs and the prompt log
        (`export.save`); a file path gets one format by its suffix: .json COCO, .png picture,
        .npy/.npz masks.
        """
        import json

        from . import export

        path = Path(path)
        if len(self._session) > 1:
            with self._cv:
                annotations = self._session.annotations()
                labels = list(self._session.labels)
                proposed = [self._session.names[i] for i in self._session.proposed()]
            log = {"engine": self.engine, "refine": bool(self.refine)}
            if proposed:  # resuming never offers these images' proposals again
                log["proposed"] = proposed
            out = export.save_dataset(path, self._image_records(), annotations, labels,
                                      prompt_log=log)
            self._session.mark_saved()
            return out
        suffix = path.suffix.lower()
        objects = self._session.current.objects
        if not suffix or path.is_dir():
            masks, scores, prompts = self._export_items()
            export.save(path, self.image, masks, scores=scores, prompts=prompts,
                        extra={"engine": self.engine, "refine": bool(self.refine)})
        elif suffix in (".json", ".npy", ".npz", ".png"):
            masks = np.stack([o["mask"] for o in objects]) if objects else self.mask[None]
            if suffix == ".json":
                path.write_text(json.dumps(self.to_coco()))
            elif suffix == ".npy":
                np.save(path, masks)
            elif suffix == ".npz":
                np.savez_compressed(path, masks=masks)
            else:
                path.write_bytes(self._render_png(max_size=max(self.image.shape[:2])))
        else:
            raise ValueError(
                f"cannot save {path.name!r}: use .json, .png, .npy or .npz, or a folder"
            )
        self._session.mark_saved()
        return path

    def _resume(self, source: Any) -> None:
        from . import export

        names = list(self._session.names)
        annotations, labels = export.load_annotations(source, names)
        for objects in annotations.values():
            for obj in objects:
                if obj.get("label") is not None and obj["label"] not in labels:
                    labels.append(obj["label"])
        where = {name: i for i, name in enumerate(names)}
        proposed = [where[n] for n in _proposed_names(source) if n in where]
        self._session.restore(annotations, labels, proposed)
        self._write(labels=list(self._session.labels), label=self._session.label,
                    label_colors=[self._session.color(x, 0) for x in self._session.labels])


def _proposed_names(source: Any) -> list[str]:
    """The images whose proposals a saved session had offered: the "proposed" list of the
    prompts.json next to the annotations (written by ``save``), else none."""
    import json

    from .export_dataset import PROMPTS_FILE

    if not isinstance(source, (str, Path)):  # a COCO dict: no prompt log
        return []
    path = Path(source)
    log = path / PROMPTS_FILE if path.is_dir() else path.with_name(PROMPTS_FILE)
    try:
        names = json.loads(log.read_text(encoding="utf-8")).get("proposed") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [str(n) for n in names]
