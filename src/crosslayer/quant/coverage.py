"""Which layers a quantization covers, and why the others stay float.

Every Conv2d / Linear that ``forward`` calls as a module is quantized, depthwise, grouped and bias-free ones
included. A Conv2d / Linear whose weights ``forward`` reads directly instead of calling it (the output
projection inside ``nn.MultiheadAttention``, which ``F.multi_head_attention_forward`` applies itself) cannot be
fake-quantized by swapping its module, so it stays float and is listed with that reason; so are the layers that
hold parameters but are not matrix products (normalisations, attention's in-projection and matmuls,
embeddings, parameters owned directly by a module).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["called_layers", "float_layers"]


@torch.no_grad()
def called_layers(model: nn.Module, example: torch.Tensor) -> set[str]:
    """Names of the Conv2d / Linear modules that ``model``'s forward calls on ``example`` (one or two images)."""
    called: set[str] = set()
    handles = [m.register_forward_pre_hook(lambda _m, _a, n=n: called.add(n))
               for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        model(example[:2].to(dev))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return called


def _reason(m: nn.Module) -> str | None:
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "batch-norm: float scale and shift (folded into the conv before it at deployment)"
    if isinstance(m, nn.LayerNorm | nn.GroupNorm):
        return f"{type(m).__name__}: normalisation statistics are computed in float"
    if isinstance(m, nn.MultiheadAttention):
        return ("attention: the in-projection, the query-key and attention-value matmuls and the softmax run in "
                "float (nn.MultiheadAttention applies its weights itself)")
    if isinstance(m, nn.Embedding):
        return "embedding: a table lookup, not a multiply"
    return None


def float_layers(model: nn.Module, quantized: set[str], called: set[str]) -> dict[str, str]:
    """``{name: reason}`` for every module holding parameters of its own that stays float."""
    out: dict[str, str] = {}
    for name, m in model.named_modules():
        if name in quantized:
            continue
        if isinstance(m, nn.Conv2d | nn.Linear):
            out[name] = ("not selected for quantization" if name in called else
                         "its weights are read directly in forward() (e.g. by nn.MultiheadAttention), not called as a "
                         "module, so a quantized layer swapped in would not change what is computed")
            continue
        own = [p for p, _ in m.named_parameters(recurse=False)]
        if not own:
            continue
        out[name or "(model)"] = _reason(m) or f"parameter(s) {', '.join(own)} of a {type(m).__name__}: kept float"
    return out
