"""Speed runners: PyTorch and ONNX Runtime runners compute the same logits; the timer reports both figures."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from crosslayer.encode.onnx_export import onnx_model
from crosslayer.encode.speed import ort_runner, time_runner, torch_runner


def test_runners_agree_and_timer_reports_latency_and_throughput(lenet5_trained: nn.Module) -> None:
    x = torch.rand(300, 1, 28, 28).numpy()
    run_pt = torch_runner(lenet5_trained)
    run_ort = ort_runner(onnx_model(lenet5_trained).SerializeToString(), threads=1)
    a, b = run_pt(x[:64]), run_ort(x[:64])
    assert a.shape == b.shape == (64, 10)
    assert np.allclose(a, b, atol=1e-4)
    res = time_runner(run_ort, x, repeats=2, min_seconds=0.02)
    assert set(res) == {"latency_ms_b1", "throughput_b256"}
    assert res["latency_ms_b1"] > 0 and res["throughput_b256"] > 256 / 10  # at least one batch in 10 s
