"""Bounds on what a dataset file may ask for, checked on headers *before* anything is allocated.

A hostile or broken file (a header claiming 2^31 images, a 2 KB PNG that decodes to 60,000 x 60,000 pixels,
an ``.npz`` array of absurd shape) is refused with one clear ``DataError`` instead of exhausting memory.
The defaults sit an order of magnitude above the legitimate datasets this toolkit trains on (CIFAR-10 in
memory is 0.6 GB); ``CROSSLAYER_MAX_DATA_GIB`` raises the in-memory budget for a bigger dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from crosslayer.errors import DataError

__all__ = ["DataLimits", "default_limits"]


@dataclass(frozen=True, kw_only=True)
class DataLimits:
    """Upper bounds for one dataset split (sizes in images, pixels, bytes)."""

    max_images: int = 5_000_000             # images in one split
    max_side: int = 16_384                  # height or width of one image, in pixels
    max_pixels: int = 1 << 26               # pixels of one image before resizing (64 Mpx)
    max_channels: int = 64                  # channels of one image
    max_classes: int = 100_000              # distinct labels
    max_file_bytes: int = 1 << 28           # one image file on disk (256 MiB)
    max_total_bytes: int = 8 << 30          # the split in memory as float32 (8 GiB)

    def check_count(self, n: int, what: str) -> None:
        if n > self.max_images:
            raise DataError(f"{what} holds {n} images, more than the {self.max_images} allowed")

    def check_image(self, h: int, w: int, c: int, what: str) -> None:
        if min(h, w, c) < 1:
            raise DataError(f"{what} has an empty image shape (height {h}, width {w}, channels {c})")
        if max(h, w) > self.max_side or h * w > self.max_pixels:
            raise DataError(f"{what} has images of {h} x {w} pixels, beyond the limit of {self.max_side} per side "
                            f"and {self.max_pixels} pixels")
        if c > self.max_channels:
            raise DataError(f"{what} has {c} channels, more than the {self.max_channels} allowed")

    def check_total(self, n_values: int, what: str) -> None:
        """``n_values`` float32 values held in memory at once."""
        need = 4 * n_values
        if need > self.max_total_bytes:
            raise DataError(f"{what} would take {need / 2**30:.1f} GiB in memory as float32, more than the "
                            f"{self.max_total_bytes / 2**30:.1f} GiB allowed (set CROSSLAYER_MAX_DATA_GIB to "
                            "raise it, or resize the images)")


def default_limits() -> DataLimits:
    """The defaults, with the in-memory budget taken from ``CROSSLAYER_MAX_DATA_GIB`` when it is set."""
    raw = os.environ.get("CROSSLAYER_MAX_DATA_GIB")
    if not raw:
        return DataLimits()
    try:
        gib = float(raw)
    except ValueError:
        gib = math.nan
    if not (math.isfinite(gib) and 0 < gib <= 4096):
        raise DataError(f"CROSSLAYER_MAX_DATA_GIB must be a number of GiB in (0, 4096], got {raw!r}")
    return DataLimits(max_total_bytes=int(gib * 2**30))
