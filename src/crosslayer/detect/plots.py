"""Report figures: a bar chart like the survey's Fig. 6 (accuracy, FPS and compute of resize / full frame /
all tiles / STP) and an annotated frame strip with the processed tiles highlighted. Frames are drawn with OpenCV;
the figures go through ``crosslayer.viz`` (the only matplotlib importer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from crosslayer.detect.detections import Detections
from crosslayer.report import Figure

__all__ = ["annotate_frame", "fig6_figure", "frame_strip_figure"]

_COLOURS = ((0, 200, 255), (255, 120, 0), (0, 220, 0), (200, 0, 200))


def annotate_frame(frame: NDArray[np.uint8], tiles: NDArray[np.int32], processed: NDArray[np.int64],
                   dets: Detections, gt: tuple[NDArray[np.float32], NDArray[np.int64]] | None = None, *,
                   class_names: Sequence[str] = (), width: int = 0) -> NDArray[np.uint8]:
    """A BGR copy of ``frame`` with the tile grid (processed tiles green and shaded), ground truth (white)
    and detections (a colour per class); downscaled to ``width`` px when given."""
    img = frame.copy()
    shade = img.copy()
    lw = max(2, frame.shape[1] // 640)
    for t in processed:
        x1, y1, x2, y2 = (int(v) for v in tiles[t])
        cv2.rectangle(shade, (x1, y1), (x2 - 1, y2 - 1), (0, 255, 0), -1)
    img = np.asarray(cv2.addWeighted(shade, 0.18, img, 0.82, 0), np.uint8)
    done = set(processed.tolist())
    for i, t in enumerate(tiles):
        colour, thick = ((0, 255, 0), lw) if i in done else ((160, 160, 160), 1)
        cv2.rectangle(img, (int(t[0]), int(t[1])), (int(t[2]) - 1, int(t[3]) - 1), colour, thick)
    if gt is not None:
        for b in gt[0].astype(int):
            cv2.rectangle(img, (b[0] - 4, b[1] - 4), (b[2] + 4, b[3] + 4), (255, 255, 255), 1)
    for b, c, s in zip(dets.boxes.astype(int), dets.classes, dets.scores, strict=True):
        colour = _COLOURS[int(c) % len(_COLOURS)]
        cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), colour, lw)
        label = f"{class_names[int(c)] if int(c) < len(class_names) else int(c)} {s:.2f}"
        cv2.putText(img, label, (b[0], max(12, b[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * lw, colour, max(1, lw // 2))
    if width and width < img.shape[1]:
        img = np.asarray(cv2.resize(img, (width, round(img.shape[0] * width / img.shape[1])),
                                    interpolation=cv2.INTER_AREA), np.uint8)
    return img


def frame_strip_figure(images: Sequence[NDArray[np.uint8]], titles: Sequence[str], *, title: str,
                       caption: str = "") -> Figure:
    """Annotated BGR frames side by side (rows of two)."""
    from crosslayer import viz

    cols = min(2, len(images))
    rows = -(-len(images) // cols)
    fig, ax = viz.new_figure(6.4 * cols / 1.3, 3.6 * rows / 1.3 + 0.3)
    ax.remove()
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for a, img, t in zip(axes, images, titles, strict=False):
        a.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        a.set_title(t, fontsize=8)
        a.axis("off")
    for a in axes[len(images):]:
        a.axis("off")
    return viz.to_figure(fig, title, caption)


def fig6_figure(metrics: dict[str, dict[str, Any]], *, title: str, caption: str = "",
                quality_key: str = "recall") -> Figure:
    """Three panels over the modes: quality (``quality_key`` and AP@0.5), frames per second, GMACs per frame."""
    from crosslayer import viz

    modes = list(metrics)
    labels = {"resize": "resize", "full_frame": "full frame", "tiles": "all tiles", "stp": "STP"}
    names = [labels.get(m, m) for m in modes]
    fig, ax = viz.new_figure(11.0, 3.4)
    ax.remove()
    a1, a2, a3 = fig.subplots(1, 3)
    x = np.arange(len(modes))
    a1.bar(x - 0.2, [100 * float(metrics[m][quality_key] or 0) for m in modes], 0.4, label=quality_key)
    a1.bar(x + 0.2, [100 * float(metrics[m]["ap50"] or 0) for m in modes], 0.4, label="AP@0.5")
    a1.set_ylabel("%")
    a1.set_ylim(0, 105)
    a1.legend(fontsize=8)
    a1.set_title("accuracy")
    a2.bar(x, [metrics[m]["fps"] for m in modes], color="tab:green")
    a2.set_title("frames per second")
    a3.bar(x, [metrics[m].get("macs_per_frame", float("nan")) / 1e9 for m in modes], color="tab:red")
    a3.set_title("detector GMACs per frame")
    for a in (a1, a2, a3):
        a.set_xticks(x, names)
        a.grid(True, axis="y", alpha=0.3)
    return viz.to_figure(fig, title, caption)
