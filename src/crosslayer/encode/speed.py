"""Latency (batch 1) and throughput (batch 256) of PyTorch models and ONNX Runtime sessions."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ort_runner", "time_runner", "torch_runner"]

Runner = Callable[[np.ndarray], np.ndarray]


def torch_runner(model: nn.Module) -> Runner:
    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def ort_runner(onnx_bytes: bytes, threads: int | None = None) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run(None, {name: x})[0])
    return run


def time_runner(run: Runner, images: np.ndarray, *, repeats: int = 5, min_seconds: float = 0.2) -> dict[str, Any]:
    """Median latency at batch 1 (ms) and throughput at batch 256 (images/s)."""
    one = np.ascontiguousarray(images[:1])
    batch = np.ascontiguousarray(images[:256])
    run(one)
    run(batch)
    lat, thr = [], []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_seconds / 4 or n < 5:
            run(one)
            n += 1
        lat.append((time.perf_counter() - t0) / n * 1e3)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_seconds or n < 2:
            run(batch)
            n += 1
        thr.append(n * len(batch) / (time.perf_counter() - t0))
    return {"latency_ms_b1": statistics.median(lat), "throughput_b256": statistics.median(thr)}
