"""Fast exact accumulation ``acc[m, o] = sum_k T[w_ok, a_mk]`` of a quantized Conv2d / Linear under an
approximate multiplier's product table ``T``, in two bit-exact ways:

- **factors** (:mod:`crosslayer.approx.factor`): ``T = F G / D`` with a small exact rank ``R``; the
  layer becomes ONE float32 convolution / matmul over ``R`` stacked channels of transformed codes
  (``F`` gathered once per weight tensor, ``G`` gathered per activation). Every partial sum is an
  integer below ``2^24`` (checked per layer from the weights' factors and the largest activation
  factor), so float32 arithmetic is exact in any summation order; otherwise float64 is used.
- **lookup**: one table lookup per multiply-accumulate, vectorised as AdaPT does on CPU (Danopoulos
  et al., "AdaPT: Fast emulation of approximate DNN accelerators in PyTorch", IEEE TCAD 2022):
  the im2col rows of activation codes index ``torch.nn.functional.embedding_bag`` tables
  ``Tab[(a, k), o] = T[w_ok, a]``, split along ``k`` so that each table chunk stays in the L2 cache
  while every row of the batch is summed through it. For any table (Mitchell's has rank 64).

``auto`` takes the factors when the rank is at most :data:`FACTOR_MAX_RANK` (the measured cross-over
on a 2-core AVX2 machine: a rank-R stacked convolution costs about R exact convolutions, a lookup pass
about ten), else lookups. Grouped and depthwise convolutions, stride, dilation and padding (with the
activation code of real zero) are handled by both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F

from crosslayer.approx.factor import TableFactors, table_factors

__all__ = ["FACTOR_MAX_RANK", "ConvGeometry", "LayerKernel", "Method", "build_kernel", "im2col_codes"]

Method = Literal["auto", "factors", "lookup"]
FACTOR_MAX_RANK = 6
_F32_EXACT = float(2**24)
_TABLE_CHUNK_ELEMS = 1 << 18  # floats per lookup-table chunk (1 MiB: stays in L2 while a batch streams by)
_ROWS_PER_PASS = 1 << 21  # index elements per im2col pass (bounds the temporary index tensor)
_TABLE_CACHE_ELEMS = 1 << 27  # keep all lookup-table chunks of a layer while they hold at most this many floats


@dataclass(frozen=True)
class ConvGeometry:
    """What a convolution needs besides its weights (None for a linear layer's stand-in)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]  # F.pad order: left, right, top, bottom
    groups: int

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        hp, wp = h + self.pads[2] + self.pads[3], w + self.pads[0] + self.pads[1]
        kh = self.dilation[0] * (self.kernel[0] - 1) + 1
        kw = self.dilation[1] * (self.kernel[1] - 1) + 1
        return (hp - kh) // self.stride[0] + 1, (wp - kw) // self.stride[1] + 1


def _pad_codes(x: torch.Tensor, geo: ConvGeometry, pad_code: int) -> torch.Tensor:
    return F.pad(x, geo.pads, value=pad_code) if any(geo.pads) else x


def im2col_codes(x: torch.Tensor, geo: ConvGeometry, pad_code: int) -> torch.Tensor:
    """Integer codes ``(N, C, H, W)`` as im2col rows ``(N * L, C * kh * kw)`` (a strided view copied once),
    padding filled with ``pad_code``; columns in the weight's ``(c, kh, kw)`` order."""
    xp = _pad_codes(x, geo, pad_code)
    n, c = xp.shape[:2]
    oh, ow = geo.out_hw(x.shape[2], x.shape[3])
    sn, sc, sh, sw = xp.stride()
    view = xp.as_strided((n, oh, ow, c, geo.kernel[0], geo.kernel[1]),
                         (sn, sh * geo.stride[0], sw * geo.stride[1], sc, sh * geo.dilation[0],
                          sw * geo.dilation[1]))
    return view.reshape(n * oh * ow, c * geo.kernel[0] * geo.kernel[1])


class LayerKernel:
    """The prepared accumulation of one layer's weight codes under one product table."""

    method: str

    def accumulate(self, x: torch.Tensor, pad_code: int) -> torch.Tensor:
        """Exact ``sum_k T[w_ok, a_mk]`` for integer activation codes ``x`` ((N, C, H, W) for a conv,
        (M, K) for a linear layer), in the layer's output layout; float32 or float64, integer-valued."""
        raise NotImplementedError


class FactorKernel(LayerKernel):
    method = "factors"

    def __init__(self, w_codes: torch.Tensor, fac: TableFactors, geo: ConvGeometry | None) -> None:
        self.geo = geo
        self.fac = fac
        r = fac.rank
        dev = w_codes.device
        o = w_codes.shape[0]
        if fac.identity:
            wst = w_codes.to(torch.float64)
        else:
            ftab = torch.tensor(fac.weight, device=dev)  # (W, R)
            wf = ftab[(w_codes.long() - fac.w_lo)]  # (O, Cg, kh, kw, R) or (O, K, R)
            wst = (wf.movedim(-1, 2) if geo is not None else wf).reshape(o, -1, *w_codes.shape[2:]).double()
        # largest partial sum: sum over r, k of |F_r(w_ok)| * max_a |G_r(a)|, for the worst output o
        gmax_r = torch.as_tensor(np.abs(fac.act).max(axis=1), dtype=torch.float64, device=dev)
        per_r = wst.abs().reshape(o, -1, r, *w_codes.shape[2:])
        sums = per_r.sum(dim=(1, *range(3, per_r.dim())))  # (O, R)
        bound = float((sums * gmax_r).sum(1).max()) if o else 0.0
        # float32 is exact below 2^24 on CPU; accelerators may run float32 convolutions through TF32 or
        # transform-domain algorithms, so they get float64 (whose error stays far below 1/2 and is rounded off)
        exact32 = bound < _F32_EXACT and w_codes.device.type == "cpu"
        self.dtype = torch.float32 if exact32 else torch.float64
        self.weight = wst.to(self.dtype).contiguous()
        self.act_table = None if fac.identity else torch.as_tensor(fac.act.T.copy(), dtype=self.dtype, device=dev)
        # a depthwise-style layer (one input channel per group) with R > 1 factors: the stacked convolution has R
        # input channels per group, which CPU libraries run on a slow generic grouped path; as R * C one-channel
        # groups (the depthwise fast path) whose R outputs per channel are summed afterwards it is the same sum of
        # the same integer partial products, exact in float32 by the same bound
        self._dw: tuple[int, int, int] | None = None
        if geo is not None and self.act_table is not None and w_codes.shape[1] == 1 and geo.groups > 1 and r > 1:
            c, og = geo.groups, o // geo.groups
            self._dw = (c, r, og)
            self.weight = (self.weight.reshape(c, og, r, *w_codes.shape[2:]).transpose(1, 2)
                           .reshape(c * r * og, 1, *w_codes.shape[2:]).contiguous())

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        """Activation factors of integer codes: (..., C, R, H, W) for a conv, (M, K * R) for a linear."""
        if self.act_table is None:
            return x.to(self.dtype)
        if self.geo is None or self.act_table.shape[1] == 1:  # rank 1: the trailing R dim moves nothing
            g = F.embedding((x - self.fac.a_lo).to(torch.int64), self.act_table)  # (..., R) trailing
            return g.reshape(x.shape[0], -1) if self.geo is None else g.reshape(x.shape)
        # gathered straight into channels-last order (channel c * R + r): no transposing copy of the R-times
        # larger tensor, and the CPU convolutions take channels-last input natively
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        g = F.embedding((x - self.fac.a_lo).to(torch.int64).permute(0, 2, 3, 1), self.act_table)  # (N, H, W, C, R)
        return g.reshape(n, h, w, -1).permute(0, 3, 1, 2)

    def _depthwise(self, xp: torch.Tensor) -> torch.Tensor:
        """The depthwise-style layer on padded codes: one-channel groups over the channels-last factors, the R
        outputs of each channel summed."""
        assert self._dw is not None and self.geo is not None and self.act_table is not None
        c, r, og = self._dw
        n = xp.shape[0]
        acc = F.conv2d(self._act(xp), self.weight, None, self.geo.stride, 0, self.geo.dilation, c * r)
        oh, ow = acc.shape[2:]
        acc = acc.permute(0, 2, 3, 1).reshape(n, oh, ow, c, r, og).sum(4)
        return acc.reshape(n, oh, ow, c * og).permute(0, 3, 1, 2).contiguous()

    def accumulate(self, x: torch.Tensor, pad_code: int) -> torch.Tensor:
        if self.geo is None:
            acc = self._act(x) @ self.weight.t()
        else:
            geo = self.geo
            xp = _pad_codes(x, geo, pad_code)
            if self._dw is None:
                acc = F.conv2d(self._act(xp), self.weight, None, geo.stride, 0, geo.dilation, geo.groups).contiguous()
            else:
                acc = self._depthwise(xp)
        if self.fac.denominator != 1:
            acc = acc.double() / self.fac.denominator
        if self.dtype == torch.float64:
            acc = torch.round(acc)
        return acc


class LookupKernel(LayerKernel):
    method = "lookup"

    def __init__(self, w_codes: torch.Tensor, table: np.ndarray, w_lo: int, a_lo: int,
                 geo: ConvGeometry | None) -> None:
        self.geo = geo
        o = w_codes.shape[0]
        groups = geo.groups if geo is not None else 1
        dev = w_codes.device
        self.groups, self.o_per_group = groups, o // groups
        wg = (w_codes.long() - w_lo).reshape(groups, self.o_per_group, -1)  # (G, Og, Kg)
        self.k = wg.shape[2]
        n_a, n_w = table.shape[1], table.shape[0]
        tmax = float(np.abs(table).max()) if table.size else 0.0
        kc = max(1, min(self.k, _TABLE_CHUNK_ELEMS // max(1, n_a * o), int((_F32_EXACT - 1) // max(1.0, tmax))))
        self.chunk, self.n_chunks = kc, -(-self.k // kc)
        self.dtype = torch.float32 if self.k * tmax < _F32_EXACT else torch.float64
        pad = self.n_chunks * kc - self.k
        if pad:  # padded positions use weight index n_w: a zero column of the transposed table
            wg = torch.cat([wg, torch.full((groups, self.o_per_group, pad), n_w, dtype=torch.long, device=dev)], 2)
        table_t = torch.zeros(n_a, n_w + 1, dtype=torch.float32, device=dev)
        table_t[:, :n_w] = torch.as_tensor(table.T, dtype=torch.float32, device=dev)
        self._table_t, self._wg = table_t, wg
        # row of (group g, code a, position kk) in a chunk table: (g * A + a - a_lo) * kc + kk
        kk = torch.arange(self.n_chunks * kc, device=dev) % kc
        off = (torch.arange(groups, device=dev)[:, None] * n_a - a_lo) * kc + kk[None, :]
        self._offsets = off.reshape(groups, self.n_chunks, kc).permute(1, 0, 2)[:, None].to(torch.int32)
        self._a_lo = a_lo
        self._cache_tables = n_a * self.n_chunks * kc * o <= _TABLE_CACHE_ELEMS
        self._chunks: list[torch.Tensor] | None = None  # built on first use

    def _table(self, j: int) -> torch.Tensor:
        if not self._cache_tables:
            return self._chunk_table(j)
        if self._chunks is None:
            self._chunks = [self._chunk_table(i) for i in range(self.n_chunks)]
        return self._chunks[j]

    def _direct(self, cols: torch.Tensor, acc: torch.Tensor) -> None:
        """Few rows (fewer than table codes, e.g. a training batch of a linear layer): one gather per MAC from
        the product table, no per-layer tables built."""
        m, g = cols.shape[0], self.groups
        a = cols.reshape(m, g, 1, self.k).long() - self._a_lo
        w = self._wg[:, :, :self.k]  # (G, Og, Kg)
        flat = self._table_t.t().to(acc.dtype).contiguous().reshape(-1)  # [w * A + a]
        n_a = self._table_t.shape[0]
        step = max(1, _ROWS_PER_PASS // max(1, self.o_per_group * g * self.k))
        for i in range(0, m, step):
            idx = (w * n_a)[None] + a[i:i + step]  # (M', G, Og, Kg)
            acc[i:i + step] += flat[idx].sum(-1).reshape(idx.shape[0], -1)

    def _chunk_table(self, j: int) -> torch.Tensor:
        """Rows ``(g, a, kk)`` x columns ``og``: ``T[w[g, og, j * kc + kk], a]``."""
        w = self._wg[:, :, j * self.chunk:(j + 1) * self.chunk]  # (G, Og, kc)
        return self._table_t[:, w].permute(1, 0, 3, 2).reshape(-1, self.o_per_group).contiguous()

    def _rows(self, cols: torch.Tensor, acc: torch.Tensor) -> None:
        """Add ``sum_k T[w_ok, cols[m, k]]`` to ``acc`` (M, O) for integer im2col rows ``cols`` (M, G * Kg)."""
        m, g, kc = cols.shape[0], self.groups, self.chunk
        a = cols.reshape(m, g, self.k)
        if self.n_chunks * kc > self.k:  # padded positions read code a_lo against the zero weight column
            a = F.pad(a, (0, self.n_chunks * kc - self.k), value=self._a_lo)
        idx = torch.empty(self.n_chunks, m, g, kc, dtype=torch.int32, device=cols.device)
        torch.add(self._offsets, a.reshape(m, g, self.n_chunks, kc).permute(2, 0, 1, 3), alpha=kc, out=idx)
        for j in range(self.n_chunks):
            acc += F.embedding_bag(idx[j].reshape(m * g, kc), self._table(j), mode="sum").reshape(m, -1)

    def accumulate(self, x: torch.Tensor, pad_code: int) -> torch.Tensor:
        o = self.groups * self.o_per_group
        xi = x.to(torch.int32)
        if self.geo is None:
            acc = torch.zeros(x.shape[0], o, dtype=self.dtype, device=x.device)
            if x.shape[0] < self._table_t.shape[0] and self._chunks is None:
                self._direct(xi, acc)
                return acc
            step = max(1, _ROWS_PER_PASS // max(1, x.shape[1]))
            for i in range(0, x.shape[0], step):
                self._rows(xi[i:i + step], acc[i:i + step])
            return acc
        n = x.shape[0]
        oh, ow = self.geo.out_hw(x.shape[2], x.shape[3])
        acc = torch.zeros(n * oh * ow, o, dtype=self.dtype, device=x.device)
        per_image = oh * ow * x.shape[1] * self.geo.kernel[0] * self.geo.kernel[1]
        step = max(1, _ROWS_PER_PASS // max(1, per_image))
        for i in range(0, n, step):
            self._rows(im2col_codes(xi[i:i + step], self.geo, pad_code), acc[i * oh * ow:(i + step) * oh * ow])
        return acc.reshape(n, oh * ow, o).transpose(1, 2).reshape(n, o, oh, ow)


def build_kernel(w_codes: torch.Tensor, table: np.ndarray, w_lo: int, a_lo: int, geo: ConvGeometry | None,
                 method: Method = "auto") -> LayerKernel:
    """The accumulation kernel of integer weight codes (O, Cg, kh, kw) / (O, K) under ``table``
    (indexed ``[w - w_lo, a - a_lo]``): factors when the exact rank is small, else lookups."""
    if method not in ("auto", "factors", "lookup"):
        raise ValueError(f"method must be auto, factors or lookup, got {method!r}")
    if method != "lookup":
        fac = table_factors(table, w_lo, a_lo, max_rank=FACTOR_MAX_RANK if method == "auto" else 64)
        if fac is not None:
            return FactorKernel(w_codes, fac, geo)
        if method == "factors":
            raise ValueError("the product table has no exact low-rank factorization; use method='lookup'")
    return LookupKernel(w_codes, table, w_lo, a_lo, geo)
