"""A curable approximate multiplier (in the spirit of CANN, Hanif, Khalid, Shafique, "CANN: Curable
Approximations for High-Performance Deep Neural Network Accelerators", DAC 2019): an approximation
whose error one module introduces and a later module removes completely, so that the network keeps its
exact accuracy while the hardware still gains speed or power.

Design ``cann<k>`` (our instance of the principle). An unsigned 8x8 carry-save array multiplier reduces
its partial-product rows with one row of full adders per row (3:2 compression, carries passed on to the
next row: Rabaey, Chandrakasan, Nikolic, *Digital Integrated Circuits*, 2nd ed., 2003, Sec. 11.5), which
leaves a sum vector ``S`` and a carry vector ``C`` with ``S + C = a b``; the low ``N`` product bits are
already final in ``S`` (``C`` has no bit below column ``N``, which a test checks), and an ``N``-bit
carry-propagate adder merges columns ``N .. 2N - 1``. Here that merge adder is cut at column ``k``
(``N < k < 2N``): its two segments add independently, so the longest carry chain shrinks from ``N`` to
``max(k - N, 2N - k)`` bits, and the carry ``c`` out of the low segment (0 or 1) is not added to the high
one. The multiplier's output is ``a b - c 2^k`` (the *uncured* product)
and ``c`` leaves the multiplier as one extra bit. The accumulator cures it: a small counter per MAC unit
adds up the signed cut carries of a dot product (``sign(w) sign(a) c`` under the library's sign-magnitude
wrapper) and one shift-add of ``count << k`` after the last product restores the exact sum::

    sum_k (w_k a_k - s_k c_k 2^k) + 2^k sum_k s_k c_k = sum_k w_k a_k.

Emulation, bit-exact, on the public interfaces: the uncured products are a :class:`Multiplier` truth table
run by :class:`~crosslayer.approx.emulate.ApproxLayer`; the counter is the lookup-and-sum of the cut-carry
table ``c 2^k`` (the same mechanism), and :class:`CuredLayer` adds the two integer accumulators before the
one rescale. A test checks the cured output against the int64 integer reference of the exact model.

Cost (:func:`cured_cost`), modelled, not synthesised, with every figure's source:

- latency: array critical path ``t_and + (N - 1) t_FA + t_merge`` (Rabaey et al., Sec. 11.5), ripple merge
  adder ``t_merge = L t_FA`` with ``L = N`` exact, ``max(k - N, 2N - k)`` cut, in full-adder delays (t_and = 1);
  the counter works beside the accumulator, off the multiplier's path; the cure adds one shift-add per dot
  product (``1 / K`` of the MAC cycles);
- area: the 64 partial-product cells plus the ``N`` merge-adder cells (the catalog's cell unit), the cut
  carry's wire, and per MAC a ``ceil(log2(K_max + 1))``-bit up/down counter at half a cell per bit;
- power at iso-throughput: the saved delay is spent on a lower multiplier supply (alpha-power delay law,
  Sakurai, Newton, IEEE JSSC 25(2), 1990: ``delay ~ V / (V - V_t)^alpha``, alpha 1.3, V_t 0.3 V of a 1.0 V
  nominal, illustrative values): dynamic power ``~ area V^2`` at the same clock.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crosslayer.approx.emulate import ApproxLayer, approximable_layers, dequantize_output
from crosslayer.approx.tables import Multiplier, operand_values
from crosslayer.errors import ConfigError, StageError
from crosslayer.quant import QuantConv2d, QuantLinear

__all__ = ["CuredCost", "CuredDesign", "CuredLayer", "CuredPoint", "carry_save_vectors", "cured_cost", "cured_design",
           "cured_model", "evaluate_cured", "split_product"]

BITS = 8


def carry_save_vectors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(S, C)`` of the carry-save array for unsigned 8-bit ``a`` x ``b`` (rows selected by ``b``'s bits):
    ``S + C == a b`` for every pair."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    s = np.broadcast_to(a * (b & 1), np.broadcast(a, b).shape).astype(np.int64)
    c = np.zeros_like(s)
    for j in range(1, BITS):
        p = np.where((b >> j) & 1 == 1, a << j, 0)
        s, c = s ^ c ^ p, ((s & c) | (s & p) | (c & p)) << 1
    return s, c


def split_product(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uncured product, cut carry)``: the merge adder of :func:`carry_save_vectors` cut at column ``k``;
    ``uncured + carry << k == a b``."""
    s, c = carry_save_vectors(a, b)
    mask = (1 << k) - 1
    low = (s & mask) + (c & mask)
    carry = low >> k
    return (s >> k << k) + (c >> k << k) + (low & mask), carry


@dataclass(frozen=True)
class CuredDesign:
    """``cann<k>``: the uncured multiplier (an ordinary :class:`Multiplier`) and the cut-carry table."""

    name: str
    k: int
    uncured: Multiplier
    carry: Multiplier


@functools.lru_cache(maxsize=16)
def cured_design(name: str) -> CuredDesign:
    """The design ``cann<k>``, ``k`` in 9..15 (the merge adder's cut column)."""
    m = re.fullmatch(r"cann(\d+)", name.strip().lower())
    if not m or not BITS < int(m.group(1)) < 2 * BITS:
        raise ConfigError(f"unknown curable design {name!r}; allowed cann<k> with k = {BITS + 1}..{2 * BITS - 1} "
                          "(the merge adder's cut column), e.g. cann12")
    k = int(m.group(1))
    v = operand_values(False)
    prod, carry = split_product(v[:, None], v[None, :], k)
    prod.setflags(write=False)
    cost = cured_cost(k)
    uncured = Multiplier(name=f"cann{k}-uncured", table=prod, signed=False, relative_power=cost.supply_ratio**2,
                         description=f"carry-save multiplier whose merge adder is cut at column {k}, cut carry "
                                     "dropped (no cure)", source="modelled, see crosslayer.approx.cured")
    carries = (carry << k).astype(np.int64)
    carries.setflags(write=False)
    cut = Multiplier(name=f"cann{k}-carry", table=carries, signed=False, relative_power=1.0,
                     description=f"cut carries of cann{k}, weighted 2^{k} (the accumulator's counter)",
                     source="not a multiplier")
    return CuredDesign(f"cann{k}", k, uncured, cut)


@dataclass(frozen=True)
class CuredCost:
    """Modelled cost of a cured design against the exact array multiplier (see the module docstring)."""

    relative_latency: float      # multiplier critical path, same supply
    relative_area: float         # multiplier cells plus the per-MAC counter
    supply_ratio: float          # iso-throughput supply / nominal
    relative_power: float        # iso-throughput dynamic power (area x supply^2)
    cure_cycles_per_output: int  # extra shift-add per dot product


def _alpha_delay(v: float, vt: float, alpha: float) -> float:
    return v / (v - vt) ** alpha


def cured_cost(k: int, *, max_terms: int = 4096, vt: float = 0.3, alpha: float = 1.3,
               nominal_v: float = 1.0) -> CuredCost:
    """Cost of ``cann<k>`` for dot products of up to ``max_terms`` products."""
    if not BITS < k < 2 * BITS:
        raise ConfigError(f"cut column k = {k!r}; allowed {BITS + 1}..{2 * BITS - 1}")
    if max_terms < 1 or not 0 < vt < nominal_v or alpha <= 0:
        raise ConfigError("cured_cost needs max_terms >= 1, 0 < vt < nominal_v and alpha > 0")
    n = BITS
    exact_delay = 1 + (n - 1) + n
    delay = 1 + (n - 1) + max(k - n, 2 * n - k)
    latency = delay / exact_delay
    counter_bits = math.ceil(math.log2(max_terms + 1)) + 1  # signed count
    exact_cells = n * n + n
    area = (exact_cells + 0.5 * counter_bits) / exact_cells
    target = _alpha_delay(nominal_v, vt, alpha) / latency  # the faster circuit may slow down to the old period
    lo, hi = vt + 1e-9, nominal_v
    for _ in range(200):  # bisection: delay falls with the supply above vt
        mid = (lo + hi) / 2
        if _alpha_delay(mid, vt, alpha) > target:
            lo = mid
        else:
            hi = mid
    supply = hi / nominal_v
    return CuredCost(latency, area, supply, area * supply**2, 1)


class CuredLayer(nn.Module):
    """A quantized Conv2d / Linear on the cured design: uncured products plus the counter's cure, one
    rescale; its output equals the exact integer layer's (see the module docstring)."""

    def __init__(self, layer: nn.Module, design: CuredDesign | str, name: str = "layer") -> None:
        super().__init__()
        d = cured_design(design) if isinstance(design, str) else design
        if not isinstance(layer, (QuantConv2d, QuantLinear)):
            raise StageError(f"layer {name!r} ({type(layer).__name__}) has no integer codes: quantize the model first")
        specs = (layer.weight_spec, layer.act_spec)
        if any(s is None or not s.symmetric for s in specs):
            raise StageError(f"layer {name!r}: the cured design needs symmetric (zero-point-free) weight and "
                             "activation codes")
        self.products = ApproxLayer(layer, d.uncured, name)
        self.counter = ApproxLayer(layer, d.carry, name)
        self.layer = layer
        self.layer_name, self.design = name, d.name
        self.relative_power = cured_cost(d.k).relative_power

    def extra_repr(self) -> str:
        return f"design={self.design!r}, relative_power={self.relative_power:.3f}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        with torch.no_grad():
            acc, scale = self.products.accumulate(x)
            cure, _ = self.counter.accumulate(x)
            out = dequantize_output(acc + cure, scale, layer.bias)
        if torch.is_grad_enabled() and self.training:
            fq = layer(x)
            return out.to(fq.dtype) + (fq - fq.detach())
        return out


def cured_model(qmodel: nn.Module, design: CuredDesign | str, layers: Sequence[str] | None = None) -> nn.Module:
    """A copy of the quantized ``qmodel`` whose quantized layers (all, or ``layers``) run on the cured design."""
    out = copy.deepcopy(qmodel)
    names = approximable_layers(out)
    chosen = list(layers) if layers is not None else names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise StageError(f"no quantized layer named {', '.join(map(repr, unknown))}; quantized layers are: "
                         f"{', '.join(names) or '(none: quantize the model first)'}")
    d = cured_design(design) if isinstance(design, str) else design
    for name in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        layer = getattr(parent, attr)
        layer = getattr(layer, "layer", layer)
        setattr(parent, attr, CuredLayer(layer, d, name).to(layer.weight.device))
    return out


@dataclass(frozen=True)
class CuredPoint:
    """One curable design measured on a model: its cost, the uncured and cured accuracies, and whether the
    cured logits equal the exact int8 model's bit for bit (on the same images)."""

    design: str
    cost: CuredCost
    uncured_med: float
    uncured_accuracy: float
    cured_accuracy: float
    equals_exact: bool


def evaluate_cured(qmodel: nn.Module, exact: nn.Module, designs: Sequence[str], images: torch.Tensor,
                   labels: torch.Tensor) -> list[CuredPoint]:
    """Each design on every quantized layer of ``qmodel``: accuracy on ``images`` of the uncured and the cured
    model, and bit equality of the cured logits with those of ``exact`` (the exact int8 model's emulation)."""
    from crosslayer.approx.emulate import approximate_model
    from crosslayer.approx.metrics import uniform_metrics
    from crosslayer.train import predict

    def accuracy(logits: torch.Tensor) -> float:
        return float((logits.argmax(1) == labels).double().mean())

    if not designs:
        return []
    layers = approximable_layers(qmodel)
    ref = predict(exact, images)
    out = []
    for name in designs:
        d = cured_design(name)
        uncured = predict(approximate_model(qmodel, dict.fromkeys(layers, d.uncured)), images)
        cured = predict(cured_model(qmodel, d), images)
        out.append(CuredPoint(d.name, cured_cost(d.k), uniform_metrics(d.uncured).med, accuracy(uncured),
                              accuracy(cured), bool(torch.equal(cured, ref))))
    return out
