"""Shape changes applied while loading: resize to a fixed size and channel-count conversion.

Both keep images in [0, 1] pixel space. Resizing is bilinear with anti-aliasing when shrinking
(``torch.nn.functional.interpolate``), done in chunks so memory stays bounded; channel conversion uses the
ITU-R BT.601 luma weights for colour to grey (as OpenCV's ``cvtColor``), repeats grey into colour, and drops
or adds an alpha channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crosslayer.errors import DataError

__all__ = ["convert_channels", "parse_size", "resize_images"]

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def parse_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``None`` / 0 (keep), an int (square) or (height, width); each side in [1, 4096]."""
    if size is None or (isinstance(size, int) and size == 0):
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in hw):
        raise DataError(f"resize must be a side or (height, width) of integers in [1, 4096], got {size!r}")
    return int(hw[0]), int(hw[1])


def resize_images(x: torch.Tensor, size: tuple[int, int], chunk: int = 1024) -> torch.Tensor:
    """Resize (N, C, H, W) float images to ``size`` = (height, width)."""
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
    out = torch.empty(x.shape[0], x.shape[1], *size, dtype=torch.float32)
    for i in range(0, x.shape[0], chunk):
        out[i:i + chunk] = F.interpolate(x[i:i + chunk].float(), size=size, mode="bilinear", align_corners=False,
                                         antialias=shrink)
    return out.clamp_(0.0, 1.0)


def convert_channels(x: torch.Tensor, channels: int, what: str = "images") -> torch.Tensor:
    """Convert (N, C, H, W) images to ``channels`` channels (1 grey, 3 RGB, 4 RGBA; C of 2 is grey + alpha)."""
    c = x.shape[1]
    if c == channels:
        return x
    if channels not in (1, 3, 4) or c not in (1, 2, 3, 4):
        raise DataError(f"cannot convert {what} from {c} to {channels} channels; conversions exist between 1 "
                        "(grey), 2 (grey + alpha), 3 (RGB) and 4 (RGBA) channels, to 1, 3 or 4")
    colour = x[:, :3] if c >= 3 else x[:, :1].expand(-1, 3, -1, -1)
    if channels == 1:
        if c <= 2:
            return x[:, :1].contiguous()
        return (colour * _LUMA.to(x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if channels == 3:
        return colour.contiguous()
    alpha = x[:, c - 1:c] if c in (2, 4) else torch.ones_like(x[:, :1])
    return torch.cat([colour, alpha], dim=1)
