"""A tiny single-shot grid detector in the style of DroNet (Kyrkou et al., DATE 2018) and Tiny-YOLO
(Redmon & Farhadi, 2017): a strided stem and a few 3x3 convolutions down to a stride-16 grid, then a few
dilated depthwise-separable 3x3 blocks (MobileNet's separable convolution, Howard et al., 2017, with the
dilations of Yu & Koltun, ICLR 2016) that widen the receptive field to about 250 px for large objects at
little cost; each cell predicts an objectness logit, the box centre offset inside the cell, the log of the
box size relative to an anchor, and class logits. Fully convolutional, so it trains on small crops and runs
on tiles or whole frames of any size that is a multiple of its stride.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from crosslayer.config import check_range
from crosslayer.detect.boxes import nms
from crosslayer.detect.detections import Detections
from crosslayer.hw.workload import trace_layers

__all__ = ["GridSpec", "TinyGridDetector", "count_macs", "decode_grid", "encode_targets", "grid_loss"]


@dataclass(frozen=True, kw_only=True)
class GridSpec:
    """Output layout: grid ``stride`` (px), ``anchor`` size (px), number of classes, channel widths, and the
    dilations of the context blocks after the last stride (one block each)."""

    num_classes: int = 3
    stride: int = 16
    anchor: float = 32.0
    widths: tuple[int, ...] = (16, 24, 32, 64)
    context: tuple[int, ...] = (2, 4)

    def validate(self) -> None:
        check_range("num_classes", self.num_classes, 1)
        check_range("anchor", self.anchor, 0.0, lo_open=True)
        check_range("len(widths)", len(self.widths), 3)
        for d in self.context:
            check_range("context dilation", d, 1, 16)
        expected = 4 * 2 ** (len(self.widths) - 2)
        check_range("stride (4 x 2^(len(widths) - 2))", self.stride, expected, expected)


def _block(cin: int, cout: int, kernel: int, stride: int, pad: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1, inplace=True))


def _context_block(ch: int, dilation: int) -> nn.Sequential:
    """Dilated depthwise 3x3 + pointwise 1x1 (one BatchNorm + LeakyReLU after the pair)."""
    return nn.Sequential(nn.Conv2d(ch, ch, 3, 1, dilation, dilation=dilation, groups=ch, bias=False),
                         nn.Conv2d(ch, ch, 1, bias=False), nn.BatchNorm2d(ch), nn.LeakyReLU(0.1, inplace=True))


class TinyGridDetector(nn.Module):
    """Input (N, 3, H, W) float in [0, 1] (BGR), H and W multiples of ``stride``; output (N, 5 + C, H/s, W/s)."""

    def __init__(self, spec: GridSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or GridSpec()
        self.spec.validate()
        w = self.spec.widths
        # A 4x4 stride-4 "patchify" stem: a stride-2 3x3 conv at full resolution costs 3x more time on a
        # CPU for the same receptive field (memory-bound at few channels).
        layers: list[nn.Module] = [_block(3, w[0], 4, 4, 0)]
        for i in range(1, len(w) - 1):
            layers.append(_block(w[i - 1], w[i], 3, 2, 1))
        layers.append(_block(w[-2], w[-1], 3, 1, 1))
        layers.extend(_context_block(w[-1], d) for d in self.spec.context)
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(w[-1], 5 + self.spec.num_classes, 1)
        assert self.head.bias is not None
        nn.init.constant_(self.head.bias[0], -4.0)  # rare objects: start with a low objectness prior

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def count_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of one forward pass on a (1, 3, height, width) input (convolutions and linears)."""
    macs = 0
    for c in trace_layers(model, torch.zeros(1, 3, height, width), lambda _n, m: isinstance(m, (nn.Conv2d, nn.Linear))):
        m = c.module
        macs += m.in_features * m.out_features if isinstance(m, nn.Linear) else c.macs_per_sample
    return macs


def encode_targets(targets: list[tuple[NDArray[np.float32], NDArray[np.int64]]], gh: int, gw: int, spec: GridSpec
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-cell targets: objectness (N, gh, gw), box (N, 4, gh, gw) = (dx, dy, log w/a, log h/a), class (N, gh, gw).

    Each box is assigned to the cell that holds its centre (the larger box wins a shared cell).
    """
    n = len(targets)
    obj = torch.zeros(n, gh, gw)
    box = torch.zeros(n, 4, gh, gw)
    cls = torch.zeros(n, gh, gw, dtype=torch.long)
    s = spec.stride
    for k, (boxes, classes) in enumerate(targets):
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[::-1]
        for i in order:
            x1, y1, x2, y2 = boxes[i]
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            gx, gy = min(int(cx // s), gw - 1), min(int(cy // s), gh - 1)
            obj[k, gy, gx] = 1.0
            box[k, :, gy, gx] = torch.tensor([cx / s - gx, cy / s - gy, np.log(max(x2 - x1, 1) / spec.anchor),
                                              np.log(max(y2 - y1, 1) / spec.anchor)])
            cls[k, gy, gx] = int(classes[i])
    return obj, box, cls


def grid_loss(out: torch.Tensor, obj: torch.Tensor, box: torch.Tensor, cls: torch.Tensor,
              pos_weight: float = 2.0) -> torch.Tensor:
    """YOLO-style loss: BCE on objectness (positives up-weighted), and on positive cells BCE on the centre
    offset, smooth-L1 on the log size and cross-entropy on the class."""
    obj_loss = nn.functional.binary_cross_entropy_with_logits(
        out[:, 0], obj, pos_weight=torch.tensor(pos_weight, device=out.device))
    pos = obj > 0.5
    if not pos.any():
        return obj_loss
    pred = out.permute(0, 2, 3, 1)[pos]  # (P, 5 + C)
    tb = box.permute(0, 2, 3, 1)[pos]
    xy = nn.functional.binary_cross_entropy_with_logits(pred[:, 1:3], tb[:, :2])
    wh = nn.functional.smooth_l1_loss(pred[:, 3:5], tb[:, 2:])
    ce = nn.functional.cross_entropy(pred[:, 5:], cls[pos])
    return obj_loss + xy + 2.0 * wh + ce


def decode_grid(out: torch.Tensor, spec: GridSpec, *, conf_threshold: float, nms_threshold: float = 0.4
                ) -> list[Detections]:
    """Raw grid output (N, 5 + C, gh, gw) to per-image detections (score = objectness x class probability)."""
    n, _, gh, gw = out.shape
    obj = torch.sigmoid(out[:, 0])
    cls_prob = torch.softmax(out[:, 5:], dim=1)
    best_p, best_c = cls_prob.max(dim=1)
    score = obj * best_p
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    cx = (xs + torch.sigmoid(out[:, 1])) * spec.stride
    cy = (ys + torch.sigmoid(out[:, 2])) * spec.stride
    w = torch.exp(out[:, 3].clamp(-4, 4)) * spec.anchor
    h = torch.exp(out[:, 4].clamp(-4, 4)) * spec.anchor
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    result = []
    for k in range(n):
        m = score[k] >= conf_threshold
        if not m.any():
            result.append(Detections.empty())
            continue
        b = boxes[k][m].numpy().astype(np.float32)
        s = score[k][m].numpy().astype(np.float32)
        c = best_c[k][m].numpy().astype(np.int64)
        keep = nms(b, s, nms_threshold, classes=None)
        result.append(Detections(b[keep], s[keep], c[keep]))
    return result
