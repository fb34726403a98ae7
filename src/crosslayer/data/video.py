"""Reading real video files with OpenCV (``cv2.VideoCapture``): BGR ``uint8`` frames, with clear errors
for a missing or unreadable file, and writing annotated videos (``cv2.VideoWriter``)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
from numpy.typing import NDArray

from crosslayer.errors import ConfigError, DataError

__all__ = ["VideoReader", "VideoWriter", "read_frames"]

log = logging.getLogger(__name__)


class VideoReader:
    """A video file opened for reading; iterate for frames (at most ``max_frames``, 0 = all)."""

    def __init__(self, path: str | os.PathLike[str], *, max_frames: int = 0) -> None:
        self.path = Path(path)
        if max_frames < 0:
            raise ConfigError(f"max_frames = {max_frames} is not allowed; use 0 (all) or a positive count")
        if not self.path.is_file():
            raise DataError(f"video {str(self.path)!r} does not exist")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise DataError(f"video {str(self.path)!r} cannot be opened by OpenCV (not a video, or an unsupported "
                            "codec)")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise DataError(f"video {str(self.path)!r} has no readable frames")
        self._first: NDArray[np.uint8] | None = np.asarray(first, np.uint8)
        self.width, self.height = first.shape[1], first.shape[0]
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 25.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
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


class VideoWriter:
    """An MJPG/AVI (or mp4v for ``.mp4``) writer that renames its temporary file into place on close, so an
    interrupted run leaves either a playable video of the frames so far or nothing."""

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in {".avi", ".mp4"}:
            raise ConfigError(f"video output {str(self.path)!r} must end in .avi or .mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=suffix)
        os.close(fd)
        self._tmp = Path(tmp)
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
        if self.frames:
            os.replace(self._tmp, self.path)
        else:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
