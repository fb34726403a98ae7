"""Seeded synthetic high-resolution videos with exact boxes, for training and testing small-object detectors.

Textured sprites of a few classes (disc, square, triangle) move over real photographs (scikit-image's
sample images, and ``images/kite.jpg`` from the offline data folder), upscaled to the frame size, with a
little sensor noise. Objects move in a few clusters, so most of a frame is empty, as in the aerial
scenes Selective Tile Processing targets (Plastiras et al., ICDSC 2018). Object sizes are drawn
log-uniformly (by default 12-128 px on a 1920x1080 frame: about 41 % COCO-small (< 32 px), 46 % medium,
12 % large (> 96 px)), so some objects are far too small to survive a downscaled frame and some large
enough to survive it. Larger objects are drawn first; an object less than half visible (hidden by
others) is left out of the ground truth of that frame. Training crops, validation sequences and
held-out test sequences use disjoint backgrounds and seeds. Frames are BGR ``uint8`` (OpenCV's
convention, as the video reader returns them).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from crosslayer.config import check_range
from crosslayer.errors import ConfigError

__all__ = ["CLASS_NAMES", "MAX_SCENE_PIXELS", "MAX_SCENE_SIDE", "TEST_BACKGROUNDS", "TRAIN_BACKGROUNDS",
           "VAL_BACKGROUNDS", "SceneConfig", "SceneFrame", "background", "draw_sizes", "render_sequence",
           "render_sprite", "training_crops"]

log = logging.getLogger(__name__)
CLASS_NAMES = ("disc", "square", "triangle")
TRAIN_BACKGROUNDS = ("kite", "immunohistochemistry", "retina", "brick", "grass", "gravel", "camera", "coins")
VAL_BACKGROUNDS = ("hubble_deep_field", "moon", "clock")
TEST_BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket")
# Bounds on what a config may ask for (checked before anything is allocated): 8K UHD frames, 1,000 objects.
MAX_SCENE_SIDE = 8192
MAX_SCENE_PIXELS = 7680 * 4320
MAX_OBJECTS = 1000
MAX_FRAMES = 1_000_000
SizeDistribution = Literal["log-uniform", "uniform"]
# Hue centre (OpenCV hue, 0-180) of each class's colour family: the class is also a colour cue.
_HUES = (0, 110, 28)


@dataclass(frozen=True, kw_only=True)
class SceneConfig:
    """One synthetic sequence: frame size, length, objects (count, clusters, sizes in px drawn from
    ``size_distribution``, speed in px/frame)."""

    width: int = 1920
    height: int = 1080
    num_frames: int = 60
    num_objects: int = 12
    clusters: int = 3
    cluster_radius: int = 300
    min_size: int = 12
    max_size: int = 128
    size_distribution: SizeDistribution = "log-uniform"
    max_speed: float = 2.5
    static_fraction: float = 0.3
    noise: float = 2.0

    def validate(self) -> None:
        check_range("scene.width", self.width, 64, MAX_SCENE_SIDE)
        check_range("scene.height", self.height, 64, MAX_SCENE_SIDE)
        check_range("scene.width x scene.height", self.width * self.height, 1, MAX_SCENE_PIXELS)
        check_range("scene.num_frames", self.num_frames, 1, MAX_FRAMES)
        check_range("scene.num_objects", self.num_objects, 0, MAX_OBJECTS)
        check_range("scene.clusters", self.clusters, 1, MAX_OBJECTS)
        check_range("scene.cluster_radius", self.cluster_radius, 0, 4 * MAX_SCENE_SIDE)
        check_range("scene.min_size", self.min_size, 3)
        check_range("scene.max_size", self.max_size, self.min_size)
        check_range("scene.max_speed", self.max_speed, 0.0, 1000.0)
        check_range("scene.static_fraction", self.static_fraction, 0.0, 1.0)
        check_range("scene.noise", self.noise, 0.0, 255.0)
        if self.size_distribution not in ("log-uniform", "uniform"):
            raise ConfigError(f"scene.size_distribution = {self.size_distribution!r} is not allowed; choose "
                              "'log-uniform' or 'uniform'")
        if self.max_size * 4 > min(self.width, self.height):
            raise ConfigError(f"scene.max_size = {self.max_size} is too large for a {self.width}x{self.height} "
                              "frame; allowed at most a quarter of the shorter side")


@dataclass(frozen=True)
class SceneFrame:
    """One frame: ``image`` (H, W, 3) BGR uint8, ``boxes`` (N, 4) float32 x1, y1, x2, y2, ``classes`` (N,)."""

    index: int
    image: NDArray[np.uint8]
    boxes: NDArray[np.float32]
    classes: NDArray[np.int64]


@functools.lru_cache(maxsize=16)
def _source_image(name: str) -> NDArray[np.uint8]:
    if name == "kite":
        from crosslayer.data.datasets import resolve_data_dir

        root = resolve_data_dir(None)
        path = root / "images" / "kite.jpg" if root is not None else None
        img = cv2.imread(str(path)) if path is not None and path.is_file() else None
        if img is None:
            raise ConfigError("background 'kite' needs images/kite.jpg in the data folder (set CROSSLAYER_DATA)")
        return np.asarray(img, np.uint8)
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ConfigError(f"unknown background {name!r}; allowed: {', '.join(TRAIN_BACKGROUNDS + TEST_BACKGROUNDS)}")
    img = np.asarray(loader())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        return np.asarray(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), np.uint8)
    return np.asarray(cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR), np.uint8)


@functools.lru_cache(maxsize=8)
def background(name: str, width: int, height: int) -> NDArray[np.uint8]:
    """Background photograph ``name`` upscaled (bicubic) to ``width`` x ``height``, BGR uint8 (read-only)."""
    img = np.asarray(cv2.resize(_source_image(name), (width, height), interpolation=cv2.INTER_CUBIC), np.uint8)
    img.setflags(write=False)
    return img


def render_sprite(cls: int, size: int, rng: np.random.Generator) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """A textured sprite of class ``cls``: BGR patch (s, s, 3) and alpha mask (s, s) in [0, 1]."""
    s = int(size)
    scale = 4  # draw at 4x and downsample: anti-aliased edges
    big = np.zeros((s * scale, s * scale), np.uint8)
    m = s * scale
    if cls == 0:
        cv2.circle(big, (m // 2, m // 2), m // 2 - scale, 255, -1)
    elif cls == 1:
        pad = scale
        cv2.rectangle(big, (pad, pad), (m - pad - 1, m - pad - 1), 255, -1)
    elif cls == 2:
        pts = np.array([[m // 2, scale], [m - scale, m - scale], [scale, m - scale]], np.int32)
        cv2.fillPoly(big, [pts], 255)
    else:
        raise ConfigError(f"sprite class {cls} is not allowed; choose 0 to {len(CLASS_NAMES) - 1}")
    alpha = cv2.resize(big, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    hue = (_HUES[cls] + rng.integers(-8, 9)) % 180
    sat, val = rng.integers(170, 256), rng.integers(150, 256)
    hsv = np.full((s, s, 3), (hue, sat, val), np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(4.0, 9.0)
    stripes = 0.75 + 0.25 * np.sign(np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period))
    patch = colour * stripes[..., None]
    edge = cv2.morphologyEx((alpha > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    patch[edge > 0] *= 0.35  # dark outline
    return np.clip(patch, 0, 255).astype(np.uint8), alpha


def _available(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` without 'kite' when the offline data folder lacks it (a warning, not an error)."""
    out = []
    for name in names:
        try:
            _source_image(name)
            out.append(name)
        except ConfigError as exc:
            log.warning("skipping training background: %s", exc)
    if not out:
        raise ConfigError(f"none of the backgrounds {', '.join(names)} is available")
    return tuple(out)


def _alpha_box(alpha: NDArray[np.float32]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha > 0.25)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _paste(img: NDArray[np.uint8], patch: NDArray[np.uint8], alpha: NDArray[np.float32], x: int, y: int) -> bool:
    """Alpha-blend ``patch`` at (x, y) (top-left), clipped to ``img``; False when nothing is visible."""
    h, w = img.shape[:2]
    s = patch.shape[0]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + s, w), min(y + s, h)
    if x1 <= x0 or y1 <= y0:
        return False
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
    region = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = (region * (1 - a) + patch[y0 - y:y1 - y, x0 - x:x1 - x] * a).astype(np.uint8)
    return True


def draw_sizes(rng: np.random.Generator, n: int, lo: int, hi: int, distribution: SizeDistribution = "log-uniform"
               ) -> NDArray[np.int64]:
    """``n`` object sizes (px) in [``lo``, ``hi``]: log-uniform (as many objects per octave) or uniform."""
    if distribution == "uniform":
        return rng.integers(lo, hi + 1, n).astype(np.int64)
    return np.clip(np.round(np.exp(rng.uniform(math.log(lo), math.log(hi + 1), n)) - 0.5), lo, hi).astype(np.int64)


def _noise_pair(noise: NDArray[np.float64], width: int, height: int) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Sensor noise (upscaled, nearest) as its positive and negative parts in uint8."""
    n = cv2.resize(np.round(noise).astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
    return np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)


def _visible_fractions(masks: list[NDArray[np.bool_] | None], corners: list[tuple[int, int]]) -> list[float]:
    """Share of each object's pixels not covered by an object drawn after it (``masks`` in drawing order)."""
    out = []
    for i, (mi, (xi, yi)) in enumerate(zip(masks, corners, strict=True)):
        if mi is None:
            out.append(0.0)
            continue
        hidden = np.zeros_like(mi)
        for mj, (xj, yj) in zip(masks[i + 1:], corners[i + 1:], strict=True):
            if mj is None:
                continue
            x0, y0 = max(xi, xj), max(yi, yj)
            x1, y1 = min(xi + mi.shape[1], xj + mj.shape[1]), min(yi + mi.shape[0], yj + mj.shape[0])
            if x1 > x0 and y1 > y0:
                hidden[y0 - yi:y1 - yi, x0 - xi:x1 - xi] |= mj[y0 - yj:y1 - yj, x0 - xj:x1 - xj]
        total = int(mi.sum())
        out.append(float((mi & ~hidden).sum()) / total if total else 0.0)
    return out


def render_sequence(cfg: SceneConfig, *, seed: int, backgrounds: tuple[str, ...] = TEST_BACKGROUNDS,
                    min_visible: float = 0.5) -> Iterator[SceneFrame]:
    """Frames of one seeded sequence; the background is ``backgrounds[seed % len(backgrounds)]``. An object
    less than ``min_visible`` visible (hidden by objects drawn over it) is not in that frame's ground truth."""
    cfg.validate()
    if not backgrounds:
        raise ConfigError("backgrounds is empty; name at least one background image")
    rng = np.random.default_rng(seed)
    bg = background(backgrounds[seed % len(backgrounds)], cfg.width, cfg.height)
    margin = cfg.max_size + cfg.cluster_radius
    centres = np.stack([rng.uniform(margin, max(margin + 1, cfg.width - margin), cfg.clusters),
                        rng.uniform(margin, max(margin + 1, cfg.height - margin), cfg.clusters)], 1)
    sizes = np.sort(draw_sizes(rng, cfg.num_objects, cfg.min_size, cfg.max_size, cfg.size_distribution))[::-1]
    classes = rng.integers(0, len(CLASS_NAMES), cfg.num_objects)
    sprites = [render_sprite(int(c), int(s), rng) for c, s in zip(classes, sizes, strict=True)]
    pos = np.zeros((cfg.num_objects, 2))
    for i in range(cfg.num_objects):  # rejection-sample positions so objects start apart
        for _ in range(50):
            c = centres[rng.integers(cfg.clusters)]
            p = c + rng.uniform(-cfg.cluster_radius, cfg.cluster_radius, 2)
            if i == 0 or np.min(np.hypot(*(pos[:i] - p).T) - (sizes[:i] + sizes[i]) * 0.75) > 0:
                break
        pos[i] = p
    speed = rng.uniform(0.3, 1.0, cfg.num_objects) * cfg.max_speed
    speed[rng.random(cfg.num_objects) < cfg.static_fraction] = 0.0
    heading = rng.uniform(0, 2 * math.pi, cfg.num_objects)
    vel = np.stack([np.cos(heading), np.sin(heading)], 1) * speed[:, None]
    noise_bank = [_noise_pair(rng.normal(0, cfg.noise, (cfg.height // 4, cfg.width // 4, 3)), cfg.width, cfg.height)
                  for _ in range(3)] if cfg.noise > 0 else []
    for f in range(cfg.num_frames):
        img = bg.copy()
        if noise_bank:
            up, down = noise_bank[int(rng.integers(len(noise_bank)))]
            img = np.asarray(cv2.subtract(cv2.add(img, up), down), np.uint8)  # saturating uint8 arithmetic
        boxes, cls_out, masks, corners = [], [], [], []
        for i, (patch, alpha) in enumerate(sprites):  # largest first: small objects stay on top
            s = patch.shape[0]
            x, y = round(pos[i, 0] - s / 2), round(pos[i, 1] - s / 2)
            corners.append((x, y))
            masks.append(alpha > 0.5 if _paste(img, patch, alpha, x, y) else None)
            bx0, by0, bx1, by1 = _alpha_box(alpha)
            boxes.append(np.clip([x + bx0, y + by0, x + bx1, y + by1], 0, [cfg.width, cfg.height] * 2))
            cls_out.append(int(classes[i]))
        visible = _visible_fractions(masks, corners)
        keep = [i for i, b in enumerate(boxes) if b[2] - b[0] >= 4 and b[3] - b[1] >= 4 and visible[i] >= min_visible]
        yield SceneFrame(f, img, np.asarray([boxes[i] for i in keep], np.float32).reshape(-1, 4),
                         np.asarray([cls_out[i] for i in keep], np.int64))
        pos += vel
        lo, hi = cfg.max_size / 2, np.array([cfg.width, cfg.height]) - cfg.max_size / 2
        bounce = (pos < lo) | (pos > hi)
        vel[bounce] *= -1
        pos = np.clip(pos, lo, hi)


def _jitter_colours(crop: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """Random hue rotation, saturation gain and channel tint, so that saturated reds / blues / yellows of
    any photograph occur in training as background (the detector must learn shapes, not colours)."""
    img: NDArray[np.floating] = crop.astype(np.float32)
    if rng.random() < 0.5:
        img = img * rng.uniform(0.6, 1.4, 3)  # tint: grey photographs get colours
    hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(0, 180))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1.0, 2.5), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    return np.clip(out + rng.normal(0, 2.0, out.shape), 0, 255).astype(np.uint8)


def _distractor(img: NDArray[np.uint8], rng: np.random.Generator) -> None:
    """A plain saturated blob (ellipse or stroke, no stripes or outline): a hard negative."""
    h, w = img.shape[:2]
    hsv = np.array([[[int(rng.integers(0, 180)), int(rng.integers(150, 256)), int(rng.integers(120, 256))]]],
                   np.uint8)
    colour = tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    if rng.random() < 0.6:
        axes = (int(rng.integers(4, 30)), int(rng.integers(4, 30)))
        cv2.ellipse(img, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    else:
        ex, ey = cx + int(rng.integers(-40, 41)), cy + int(rng.integers(-40, 41))
        cv2.line(img, (cx, cy), (ex, ey), colour, int(rng.integers(3, 12)), cv2.LINE_AA)


def training_crops(n: int, size: int, *, seed: int, min_size: int = 12, max_size: int = 128, scale: float = 1.0,
                   size_distribution: SizeDistribution = "log-uniform", max_objects: int = 4,
                   min_visible: float = 0.5, max_distractors: int = 3,
                   backgrounds: tuple[str, ...] = TRAIN_BACKGROUNDS
                   ) -> tuple[NDArray[np.uint8], list[tuple[NDArray[np.float32], NDArray[np.int64]]]]:
    """``n`` training crops (n, size, size, 3) cut from 1920x1080 training backgrounds with 0..``max_objects``
    sprites each, and per crop (boxes, classes). Sprites are ``min_size``-``max_size`` px at frame scale; with
    ``scale`` < 1 a ``size / scale`` px region of the frame is cut and downscaled (area interpolation) to
    ``size``, as a detector sees a resized frame. Sprites cut by the border are kept when at least
    ``min_visible`` of their box is inside. Backgrounds get random colours and up to ``max_distractors``
    plain coloured blobs (hard negatives)."""
    check_range("n", n, 1)
    check_range("scale", scale, 0.0, 1.0, lo_open=True)
    region = round(size / scale)
    check_range("size / scale (the frame region of a crop)", region, max_size, 1080)
    rng = np.random.default_rng(seed)
    backgrounds = _available(backgrounds)
    images = np.zeros((n, size, size, 3), np.uint8)
    targets = []
    for k in range(n):
        bg = background(backgrounds[int(rng.integers(len(backgrounds)))], 1920, 1080)
        x0, y0 = int(rng.integers(0, 1920 - region + 1)), int(rng.integers(0, 1080 - region + 1))
        cut = bg[y0:y0 + region, x0:x0 + region]
        if region != size:
            cut = np.asarray(cv2.resize(cut, (size, size), interpolation=cv2.INTER_AREA), np.uint8)
        img = _jitter_colours(cut, rng)
        for _ in range(int(rng.integers(0, max_distractors + 1))):
            _distractor(img, rng)
        # sprites go on a premultiplied layer at frame scale, area-downscaled with its coverage, then composited
        layer = np.zeros((region, region, 3), np.float32)
        cover = np.zeros((region, region), np.float32)
        boxes, cls_out = [], []
        placed: list[tuple[float, float, int]] = []
        count = int(rng.integers(0, max_objects + 1))
        for s in np.sort(draw_sizes(rng, count, min_size, max_size, size_distribution))[::-1]:
            c, s = int(rng.integers(len(CLASS_NAMES))), int(s)
            for _ in range(20):  # objects apart, as in the scenes
                x, y = int(rng.integers(-s // 2, region - s // 2)), int(rng.integers(-s // 2, region - s // 2))
                if all(abs(x + s / 2 - px) > (s + ps) * 0.55 or abs(y + s / 2 - py) > (s + ps) * 0.55
                       for px, py, ps in placed):
                    break
            else:
                continue
            placed.append((x + s / 2, y + s / 2, s))
            patch, alpha = render_sprite(c, s, rng)
            _over(layer, cover, patch, alpha, x, y)
            bx0, by0, bx1, by1 = _alpha_box(alpha)
            full = np.array([x + bx0, y + by0, x + bx1, y + by1], np.float32)
            clipped = np.clip(full, 0, region)
            area = (full[2] - full[0]) * (full[3] - full[1])
            vis = max(0.0, clipped[2] - clipped[0]) * max(0.0, clipped[3] - clipped[1]) / area
            if vis >= min_visible:
                boxes.append(clipped * (size / region))
                cls_out.append(c)
        if placed:
            if region != size:
                layer = np.asarray(cv2.resize(layer, (size, size), interpolation=cv2.INTER_AREA), np.float32)
                cover = np.asarray(cv2.resize(cover, (size, size), interpolation=cv2.INTER_AREA), np.float32)
            img = np.clip(img * (1 - cover[..., None]) + layer, 0, 255).astype(np.uint8)
        images[k] = img
        targets.append((np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(cls_out, np.int64)))
    return images, targets


def _over(layer: NDArray[np.float32], cover: NDArray[np.float32], patch: NDArray[np.uint8],
          alpha: NDArray[np.float32], x: int, y: int) -> None:
    """Composite ``patch`` (alpha ``alpha``) at (x, y) over a premultiplied colour ``layer`` and its ``cover``."""
    h, w = cover.shape
    s = patch.shape[0]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + s, w), min(y + s, h)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
    layer[y0:y1, x0:x1] = layer[y0:y1, x0:x1] * (1 - a[..., None]) + patch[y0 - y:y1 - y, x0 - x:x1 - x] * a[..., None]
    cover[y0:y1, x0:x1] = cover[y0:y1, x0:x1] * (1 - a) + a
