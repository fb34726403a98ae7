"""Storage figures pinned: the pruned / quantized storage and the packed file of seeded, pruned, quantized LeNets,
as the accounting gave them before its three implementations became one owner (prune.storage). A change of
any of these numbers changes the compression benchmark's figures."""

from __future__ import annotations

import copy

import pytest
import torch

from crosslayer.encode import pack_model
from crosslayer.models import build_model
from crosslayer.prune import apply_masks, magnitude_masks, model_storage, prunable_weights
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.quant.storage import quantized_storage

GOLDEN = {
    ("lenet5", 0.7, 4): (4829436, 676188, 1181140, 589140, 128, 94826,
                         {"bias": 18560, "codebook": 536, "header": 6432, "indices": 379000, "pointers": 8504,
                          "values": 345576}),
    ("lenet300", 0.95, 8): (755007, 100255, 273793, 97145, 96, 19813,
                            {"bias": 13120, "codebook": 1696, "header": 3624, "indices": 44560, "pointers": 3904,
                             "values": 91600}),
}


@pytest.mark.parametrize("case", list(GOLDEN))
def test_storage_figures_unchanged(case: tuple[str, float, int]) -> None:
    name, sparsity, bits = case
    torch.manual_seed(0)
    m = build_model(name).eval()
    net = apply_masks(copy.deepcopy(m), magnitude_masks(prunable_weights(m), "class-blind", sparsity)[0])
    st = model_storage(net)
    quantize_model(net, FixedPointSpec(bits=bits), FixedPointSpec(bits=8, signed=False, symmetric=False))
    with calibrating(net):
        net(torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    qs = quantized_storage(net)
    data, acct = pack_model(net)
    got = (st.bits, st.index_bits_total, qs.bits, qs.index_bits_total, qs.scale_bits_total, len(data),
           dict(sorted(acct["total_bits"].items())))
    assert got == GOLDEN[case]
