"""Crossbar inference: Linear and Conv2d layers replaced by simulated ReRAM crossbars.

A :class:`CrossbarLayer` holds the programmed conductance pairs of one layer (see
:mod:`crosslayer.imc.devices`) and computes its matrix-vector products the way a tiled crossbar
accelerator does (ISAAC, Shafiee et al., ISCA 2016; PRIME, Chi et al., ISCA 2016): each input
vector is scaled by its absolute maximum and coded by the DAC, every ``rows``-high tile produces
analog partial sums (Kirchhoff current sums, ``sum_r x_r (G+_r - G-_r)``) that its ADC digitises,
and the digital periphery adds the tiles, undoes the scales and adds the bias.
Convolutions are lowered to matrix products with ``unfold`` (im2col), as crossbar mappings do. A grouped or
depthwise convolution is one block-diagonal matrix: group ``g``'s filters take the rows of its own input
channels' patches and its own output columns, and the cells off the diagonal blocks are not programmed (they
hold no device and add no current), so each row tile digitises only the columns of the groups it holds: the
plain mapping of a grouped layer, whose row tiles are used to ``1 / groups`` of the block rows' width at most
(depthwise layers use crossbars poorly); :func:`crosslayer.imc.cost.layer_cost` counts the same tiles and
conversions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.errors import StageError
from crosslayer.imc.devices import Conductances, program
from crosslayer.imc.spec import CrossbarSpec

__all__ = ["CrossbarLayer", "adc_quantize", "block_diagonal", "calibrating_adc", "crossbar_layers", "crossbar_mvm",
           "dac_encode", "dac_quantize", "diagonal_blocks", "mappable_layers", "to_crossbar"]


def dac_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed DAC on inputs already scaled to ``[-1, 1]``: step ``1 / (2^(bits-1) - 1)``; 0 bits = ideal."""
    if bits == 0:
        return x
    n = 2 ** (bits - 1) - 1
    return torch.round(x.clamp(-1.0, 1.0) * n) / n


def adc_quantize(ps: torch.Tensor, full_scale: float, bits: int) -> torch.Tensor:
    """Signed ADC over ``+-full_scale``: clip, then step ``full_scale / (2^(bits-1) - 1)``; 0 bits = ideal."""
    if bits == 0:
        return ps
    n = 2 ** (bits - 1) - 1
    fs = max(float(full_scale), 1e-12)
    return ps.clamp(-fs, fs).mul_(n / fs).round_().mul_(fs / n)


def dac_encode(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each sample (dim 0) by its absolute maximum and code it with the DAC.

    Returns the codes in ``[-1, 1]`` and the per-sample scales (shape ``(N, 1, ...)``), which the
    digital periphery multiplies back. For a Linear layer a sample is one input vector (aihwkit's
    "abs-max noise management"); for a convolution it is one image's whole input feature map, so each
    activation is converted once and reused by every patch that reads it.
    """
    dims = tuple(range(1, x.dim()))
    scale = x.abs().amax(dim=dims, keepdim=True) if dims else x.abs()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return dac_quantize(x / scale, bits), scale


def crossbar_mvm(xq: torch.Tensor, w_norm: torch.Tensor, spec: CrossbarSpec, full_scale: torch.Tensor,
                 record: torch.Tensor | None = None) -> torch.Tensor:
    """``W xq`` in normalised units through the tiles and their ADCs.

    ``xq``: DAC codes in ``[-1, 1]``, either (N, in) (returns (N, out)) or, for a lowered convolution,
    (N, in, L) patches (returns (N, out, L)); ``w_norm``: (in, out) normalised conductance differences
    ``(G+ - G-) / (g_max - g_min)``, cut into ``spec.rows``-high tiles; ``full_scale``: (tiles,) ADC
    range per tile. Results are in "normalised input x normalised weight" units. When ``record`` is
    given, each tile's largest |partial sum| is max-accumulated into it and the ADC is bypassed.
    """
    out: torch.Tensor | None = None
    fs = full_scale.tolist()
    for t, r0 in enumerate(range(0, w_norm.shape[0], spec.rows)):
        w_t = w_norm[r0:r0 + spec.rows]
        # one tile's column currents (Kirchhoff sums over its rows)
        ps = xq[:, r0:r0 + spec.rows] @ w_t if xq.dim() == 2 else torch.matmul(w_t.t(), xq[:, r0:r0 + spec.rows])
        if record is not None:
            record[t] = torch.maximum(record[t], ps.abs().max())
        else:
            ps = adc_quantize(ps, fs[t], spec.adc_bits)
        out = ps if out is None else out.add_(ps)
    if out is None:
        raise StageError("crossbar_mvm got a weight matrix with no rows")
    return out


class CrossbarLayer(nn.Module):
    """A Linear or Conv2d layer programmed onto crossbar tiles (bias and scaling stay digital)."""

    w_norm: torch.Tensor
    adc_fs: torch.Tensor

    def __init__(self, layer: nn.Linear | nn.Conv2d, spec: CrossbarSpec, *, chip_seed: int, cycle_seed: int) -> None:
        super().__init__()
        self.groups = 1
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                raise StageError("crossbar mapping supports Conv2d with numeric zero padding; "
                                 f"got padding = {layer.padding!r}, padding_mode = {layer.padding_mode!r}")
            self.kind = "conv"
            self.groups = layer.groups
            self.conv_args = {"kernel_size": layer.kernel_size, "dilation": layer.dilation,
                              "padding": layer.padding, "stride": layer.stride}
        elif isinstance(layer, nn.Linear):
            self.kind = "linear"
            self.conv_args = {}
        else:
            raise StageError(f"cannot map a {type(layer).__name__} onto a crossbar; only Linear and Conv2d")
        self.spec = spec
        quant_weight = getattr(layer, "quant_weight", None)
        w = (quant_weight() if callable(quant_weight) else layer.weight).detach()
        self.weight_shape = tuple(w.shape)
        w_flat = w.reshape(w.shape[0], -1).cpu()
        w2 = block_diagonal(w_flat, self.groups)
        self.cond: Conductances = program(w2, spec, chip_seed=chip_seed, cycle_seed=cycle_seed)
        window = spec.g_max - spec.g_min
        self.n_tiles = math.ceil(w2.shape[1] / spec.rows)
        w_norm = (self.cond.g_pos - self.cond.g_neg) / window
        if self.groups > 1:  # off-block cells are not programmed: no device, no current
            w_norm = w_norm * block_diagonal(torch.ones_like(w_flat), self.groups)
        w_norm = w_norm.t().contiguous()
        self.register_buffer("w_norm", w_norm.to(w.device))
        self.w_unit = window * self.cond.w_per_g * self.cond.gain
        self.register_buffer("adc_fs", torch.zeros(self.n_tiles, device=w.device))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        self.calibrating = False
        self.in_features = w2.shape[1]
        self.out_features = w2.shape[0]

    def full_scale(self) -> torch.Tensor:
        """The ADC range per tile: fixed by the spec, else calibrated, else the worst case (``rows``)."""
        if self.spec.adc_full_scale > 0:
            return torch.full_like(self.adc_fs, self.spec.adc_full_scale)
        if bool((self.adc_fs > 0).all()):
            return self.adc_fs * self.spec.adc_headroom
        return torch.full_like(self.adc_fs, float(self.spec.rows))

    def effective_weight(self) -> torch.Tensor:
        """The weight the programmed conductances realise (converters aside), in the layer's shape."""
        return diagonal_blocks(self.w_norm.t() * self.w_unit, self.groups).reshape(self.weight_shape)

    def _mvm(self, xq: torch.Tensor) -> torch.Tensor:
        record = self.adc_fs if self.calibrating else None
        return crossbar_mvm(xq, self.w_norm, self.spec, self.full_scale(), record=record) * self.w_unit

    def _digital_tail(self, y: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return y
        return y + (self.bias if self.kind == "linear" else self.bias.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            lead = x.shape[:-1]
            xq, scale = dac_encode(x.reshape(-1, x.shape[-1]), self.spec.dac_bits)
            y = self._mvm(xq) * scale
            return self._digital_tail(y).reshape(*lead, self.out_features)
        n, _, h, w = x.shape
        xq, scale = dac_encode(x, self.spec.dac_bits)
        k, d, p, s = (self.conv_args[a] for a in ("kernel_size", "dilation", "padding", "stride"))
        cols = F.unfold(xq, k, dilation=d, padding=p, stride=s)  # (N, C*k*k, L): im2col
        ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        y = self._mvm(cols).reshape(n, self.out_features, ho, wo)
        return self._digital_tail(y * scale)

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.in_features}->{self.out_features}, tiles={self.n_tiles}"


def block_diagonal(w: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped layer's ``(out, in / groups)`` weight as its ``(out, in)`` block-diagonal matrix: output rows of
    group ``g`` read only the input columns of group ``g``."""
    if groups == 1:
        return w
    out, in_g = w.shape
    full = w.new_zeros(out, in_g * groups)
    out_g = out // groups
    for g in range(groups):
        full[g * out_g:(g + 1) * out_g, g * in_g:(g + 1) * in_g] = w[g * out_g:(g + 1) * out_g]
    return full


def diagonal_blocks(full: torch.Tensor, groups: int) -> torch.Tensor:
    """The inverse of :func:`block_diagonal`: the ``(out, in / groups)`` weight on the diagonal of ``full``."""
    if groups == 1:
        return full
    blocks = full.reshape(groups, full.shape[0] // groups, groups, full.shape[1] // groups)
    idx = torch.arange(groups, device=full.device)
    return blocks[idx, :, idx, :].reshape(full.shape[0], -1)


def crossbar_layers(model: nn.Module) -> Iterator[tuple[str, CrossbarLayer]]:
    for name, m in model.named_modules():
        if isinstance(m, CrossbarLayer):
            yield name, m


class calibrating_adc:
    """Within the block, crossbar layers record each tile's largest |partial sum| (ideal ADC);
    afterwards their ADC ranges are those maxima (times ``adc_headroom``)."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for _, m in crossbar_layers(model)]

    def __enter__(self) -> calibrating_adc:
        for m in self.layers:
            m.adc_fs.zero_()
            m.calibrating = True
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.layers:
            m.calibrating = False


def mappable_layers(model: nn.Module) -> list[str]:
    """Names of the Linear / Conv2d layers a crossbar can take, in module order. The output projection of an
    ``nn.MultiheadAttention`` is left digital: attention reads its weight directly instead of calling it."""
    inside_attention = {f"{n}.{c}" if n else c for n, m in model.named_modules()
                        if isinstance(m, nn.MultiheadAttention) for c, _ in m.named_children()}
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and n not in inside_attention]


def to_crossbar(model: nn.Module, spec: CrossbarSpec, *, seed: int = 0, cycle: int = 0,
                calibration: torch.Tensor | None = None, layers: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` with its Linear / Conv2d layers (all, or ``layers``) programmed onto crossbars.

    ``seed`` identifies the chip (device-to-device variation and stuck-at faults), ``cycle`` the
    programming (cycle-to-cycle variation): same pair, same numbers. With ``calibration`` images
    (and ``spec.adc_full_scale == 0``), the ADC ranges are set from one pass over them.
    """
    net = copy.deepcopy(model).eval()
    names = mappable_layers(net)
    if not names:
        raise StageError("the model has no Linear or Conv2d layer to map onto a crossbar")
    chosen = names if layers is None else layers
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise StageError(f"no Linear/Conv2d layer named {', '.join(map(repr, unknown))}; "
                         f"layers are: {', '.join(names)}")
    for i, name in enumerate(names):
        if name not in chosen:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        layer = getattr(parent, attr)
        chip_seed = (seed * 1_000_003 + i) % 2**62
        cycle_seed = (seed * 7_919 + cycle * 1_000_033 + 104_729 * (i + 1)) % 2**62
        setattr(parent, attr, CrossbarLayer(layer, spec, chip_seed=chip_seed, cycle_seed=cycle_seed))
    if calibration is not None and spec.adc_full_scale == 0 and spec.adc_bits > 0:
        from crosslayer.train import predict

        with calibrating_adc(net):
            predict(net, calibration)
    return net
