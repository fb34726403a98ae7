"""Reading real video files with OpenCV (``cv2.VideoCapture``): BGR ``uint8`` frames, with clear errors
for a missing, unreadable, oversized or truncated file, and writing annotated videos (``cv2.VideoWriter``).

A video is data from outside: its declared frame size is checked against :data:`MAX_FRAME_SIDE` and
:data:`MAX_FRAME_PIXELS` before a single frame is decoded (so a 1 MB file that declares 60,000 x 60,000
frames costs nothing), frames are streamed one at a time, and a file that ends before the frame count
its header declares raises :class:`TruncatedVideoError` after the frames that could be read.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
from numpy.typing import NDArray

from crosslayer.errors import ConfigError, DataError

__all__ = ["MAX_FRAME_PIXELS", "MAX_FRAME_SIDE", "TruncatedVideoError", "VideoReader", "VideoWriter",
           "check_frame_size", "read_frames", "remove_stale_partials"]

log = logging.getLogger(__name__)
MAX_FRAME_SIDE = 8192  # px
MAX_FRAME_PIXELS = 7680 * 4320  # 8K UHD: 33 Mpx, 100 MB per BGR frame


class TruncatedVideoError(DataError):
    """A video that ends (or stops decoding) before the frame count its header declares."""

    def __init__(self, message: str, frames_read: int) -> None:
        super().__init__(message)
        self.frames_read = frames_read


def check_frame_size(width: int, height: int, what: str) -> None:
    """Refuse a frame size of zero or beyond :data:`MAX_FRAME_SIDE` / :data:`MAX_FRAME_PIXELS`."""
    if width <= 0 or height <= 0:
        raise DataError(f"{what} declares no frame size ({width}x{height}); it is not a readable video")
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
        raise DataError(f"{what} has {width}x{height} frames; at most {MAX_FRAME_SIDE} px a side and "
                        f"{MAX_FRAME_PIXELS / 1e6:.1f} Mpx (8K UHD) are allowed")


class VideoReader:
    """A video file opened for reading; iterate for frames (at most ``max_frames``, 0 = all)."""

    def __init__(self, path: str | os.PathLike[str], *, max_frames: int = 0) -> None:
        self.path = Path(path)
        if max_frames < 0:
            raise ConfigError(f"max_frames = {max_frames} is not allowed; use 0 (all) or a positive count")
        if not self.path.exists():
            raise DataError(f"video {str(self.path)!r} does not exist")
        if not self.path.is_file():
            raise DataError(f"video {str(self.path)!r} is not a regular file")
        what = f"video {str(self.path)!r}"
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise DataError(f"{what} cannot be opened by OpenCV (not a video, or an unsupported codec)")
        try:  # the declared size, before anything is decoded
            declared = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            check_frame_size(*declared, what)
            ok, first = self._cap.read()
            if not ok or first is None:
                raise DataError(f"{what} has no readable frames")
            check_frame_size(first.shape[1], first.shape[0], what)
        except BaseException:
            self._cap.release()
            raise
        self._first: NDArray[np.uint8] | None = np.asarray(first, np.uint8)
        self.width, self.height = first.shape[1], first.shape[0]
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else 25.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.declared_frames = max(count, 0)
        self.frame_count = min(count, max_frames) if max_frames and count > 0 else (max_frames or max(count, 0))
        self.max_frames = max_frames

    def __iter__(self) -> Iterator[NDArray[np.uint8]]:
        n = 0
        if self._first is not None:
            first, self._first = self._first, None
            yield first
            n = 1
        while not self.max_frames or n < self.max_frames:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                expected = min(self.declared_frames, self.max_frames or self.declared_frames)
                if expected - n > max(1, expected // 200):  # container counts can be off by a frame
                    raise TruncatedVideoError(f"video {str(self.path)!r} stops after {n} frames of the "
                                              f"{self.declared_frames} its header declares (truncated or corrupt)", n)
                break
            if frame.shape[:2] != (self.height, self.width):
                raise DataError(f"video {str(self.path)!r}: frame {n} has size {frame.shape[1]}x{frame.shape[0]}, "
                                f"expected {self.width}x{self.height}")
            yield np.asarray(frame, np.uint8)
            n += 1

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_frames(path: str | os.PathLike[str], max_frames: int = 0) -> list[NDArray[np.uint8]]:
    """All frames (up to ``max_frames``) of a video as a list."""
    with VideoReader(path, max_frames=max_frames) as r:
        return list(r)


_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.partial\.(avi|mp4)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the temporary videos of writers whose process no longer runs (killed with SIGKILL, a power
    cut): ``.<stem>.<pid>-<random>.partial.<ext>``. Returns what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            m = _PARTIAL.match(p.name)
            if m and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


class VideoWriter:
    """An MJPG/AVI (or mp4v for ``.mp4``) writer that renames its temporary file into place on close, so an
    interrupted run leaves either a playable video of the frames so far or nothing. The temporary file
    ``.<stem>.<pid>-<random>.partial.<ext>`` carries its process id: a run killed before it could clean up
    (SIGKILL) leaves one, and the next writer in that folder removes it."""

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in {".avi", ".mp4"}:
            raise ConfigError(f"video output {str(self.path)!r} must end in .avi or .mp4")
        check_frame_size(size[0], size[1], f"video output {str(self.path)!r}")
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise ConfigError(f"video output fps = {fps} is not allowed; use 0 < fps <= 1000")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_partials(self.path.parent):
            log.info("removed %s, left by a killed run", p)
        self._tmp = self.path.parent / f".{self.path.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{suffix}"
        fourcc = cv2.VideoWriter.fourcc(*("mp4v" if suffix == ".mp4" else "MJPG"))
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(fps), size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise DataError(f"OpenCV cannot write video {str(self.path)!r}")
        self.size = size
        self.frames = 0

    def write(self, frame: NDArray[np.uint8]) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = np.asarray(cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA), np.uint8)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        self._writer.release()
        try:
            if self.frames and self._tmp.exists():
                os.replace(self._tmp, self.path)
        finally:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
