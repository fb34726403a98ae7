"""Storage figures pinned: the pruned / quantized storage and the packed file of seeded, pruned, quantized LeNets,
as the accounting gave them before its three implementations became one owner (prune.storage). A change of
any of these numbers changes the compression benchmark's figures. Packed format 3 (an ONNX graph instead of the
op list) kept every weight stream bit for bit: values, indices, pointers and codebooks are the format-2 figures;
header, graph and raw tensors are the new container's."""

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


CONTAINER = {("lenet5", 0.7, 4): (99418, {"bias": 18560, "graph": 24520, "header": 18392, "tensors": 256}),
             ("lenet300", 0.95, 8): (23074, {"bias": 13120, "graph": 15880, "header": 13640, "tensors": 192})}


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
    data, acct = pack_model(net, torch.zeros(2, 1, 28, 28))
    want = GOLDEN[case]
    got = (st.bits, st.index_bits_total, qs.bits, qs.index_bits_total, qs.scale_bits_total)
    assert got == want[:5]
    weights = ("codebook", "indices", "pointers", "values")
    assert {k: acct["total_bits"][k] for k in weights} == {k: want[6][k] for k in weights}
    assert (len(data), {k: v for k, v in acct["total_bits"].items() if k not in weights}) == CONTAINER[case]
