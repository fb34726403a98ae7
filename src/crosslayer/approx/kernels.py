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
  ``Tab[(k, a), o] = T[w_ok, a]``, so one bag sums a whole receptive field. The lookup indices are
  built in one fused pass over channels-last padded codes (columns in ``(kh, kw, c)`` order); a table
  larger than :data:`_TABLE_CHUNK_ELEMS` floats (layers with very many outputs) is split along ``k``
  and the chunks' sums added. For any table (Mitchell's has rank 64).

``auto`` takes the factors for rank 1 (one convolution), lookups for a table without an exact
factorization of rank up to :data:`TUNE_MAX_RANK`, and in between times both on the layer's first call
and keeps the faster (:class:`TunedKernel`; a layer whose lookup tables would exceed 64 MiB takes the
rank rule instead, nothing built): the cross-over depends on the layer's shape (wide convolutions
favour the factors, narrow ones the lookups) and on the machine. Grouped and depthwise convolutions,
stride, dilation and padding (with the activation code of real zero) are handled by both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F

from crosslayer.approx.factor import TableFactors, table_factors

__all__ = ["FACTOR_MAX_RANK", "TUNE_MAX_RANK", "TUNE_MIN_ROWS", "ConvGeometry", "DepthwiseLookupKernel", "LayerKernel",
           "LookupKernel", "Method", "TunedKernel", "build_kernel"]

Method = Literal["auto", "factors", "lookup"]
FACTOR_MAX_RANK = 6  # the rank rule used before a layer's kernels are timed
TUNE_MAX_RANK = 16  # tables of exact rank 2..16 get both kernels, timed on the first call
TUNE_MIN_ROWS = 256  # output rows (pixels x images) a call needs to be timed
_F32_EXACT = float(2**24)
_TABLE_CHUNK_ELEMS = 1 << 24  # floats per lookup table (64 MiB); larger ones are split along the weight positions
_ROWS_PER_PASS = 1 << 21  # index elements per im2col pass (bounds the temporary index tensor)
_DEPTHWISE_ELEMS_PER_PASS = 1 << 19  # padded input codes per block of a depthwise lookup pass
_TABLE_CACHE_ELEMS = 1 << 27  # keep a layer's lookup tables while they hold at most this many floats in all


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
    """One table lookup per multiply-accumulate through ``embedding_bag`` (AdaPT-style).

    The table of a layer has one row per (group, weight position, activation code) holding the products of
    that activation code with the group's weights at that position, so a bag of one output pixel's receptive
    field sums all its products at once. Weight positions are in channels-last order ``(kh, kw, c)`` so that
    the lookup indices of a whole batch are built in one fused, mostly contiguous pass over the padded codes.
    The table is split along the weight positions only where it would exceed :data:`_TABLE_CHUNK_ELEMS`
    floats (layers with very many outputs), each chunk's sums added into the accumulators."""

    method = "lookup"

    def __init__(self, w_codes: torch.Tensor, table: np.ndarray, w_lo: int, a_lo: int,
                 geo: ConvGeometry | None) -> None:
        self.geo = geo
        o = w_codes.shape[0]
        groups = geo.groups if geo is not None else 1
        dev = w_codes.device
        self.groups, self.o_per_group = groups, o // groups
        wl = w_codes.long() - w_lo
        if geo is not None:  # the activation rows' channels-last column order (kh, kw, c)
            wl = wl.permute(0, 2, 3, 1)
        wg = wl.reshape(groups, self.o_per_group, -1)  # (G, Og, Kg)
        self.k = wg.shape[2]
        n_a = table.shape[1]
        tmax = float(np.abs(table).max()) if table.size else 0.0
        kc = max(1, min(self.k, _TABLE_CHUNK_ELEMS // max(1, n_a * o), int((_F32_EXACT - 1) // max(1.0, tmax))))
        self.chunk, self.n_chunks = kc, -(-self.k // kc)
        self.dtype = torch.float32 if self.k * tmax < _F32_EXACT else torch.float64
        self._table_t = torch.as_tensor(table.T, dtype=torch.float32, device=dev).contiguous()  # [a, w]
        self._wg, self._n_a, self._a_lo = wg, n_a, a_lo
        # lookup row of (group g, position k, code a) in a one-chunk table: (g * Kg + k) * A + a - a_lo; a chunk
        # j of kcj positions holds row (g * kcj + k - j * kc) * A + a - a_lo, i.e. minus a per-group constant
        gk = torch.arange(groups, device=dev)[:, None] * self.k + torch.arange(self.k, device=dev)[None, :]
        self._koff = (gk * n_a - a_lo).to(torch.int32)  # (G, Kg)
        self._cache_tables = n_a * self.k * o <= _TABLE_CACHE_ELEMS
        self._chunks: list[torch.Tensor] | None = None  # built on first use

    def _chunk_span(self, j: int) -> tuple[int, int]:
        return j * self.chunk, min(self.k, (j + 1) * self.chunk)

    def _table(self, j: int) -> torch.Tensor:
        if not self._cache_tables:
            return self._chunk_table(j)
        if self._chunks is None:
            self._chunks = [self._chunk_table(i) for i in range(self.n_chunks)]
        return self._chunks[j]

    def _chunk_table(self, j: int) -> torch.Tensor:
        """Rows ``(g, k, a)`` for the positions of chunk ``j`` x columns ``og``: ``T[w[g, og, k], a]``."""
        lo, hi = self._chunk_span(j)
        w = self._wg[:, :, lo:hi]  # (G, Og, kcj)
        return self._table_t[:, w].permute(1, 3, 0, 2).reshape(-1, self.o_per_group).contiguous()

    def _direct(self, cols: torch.Tensor, acc: torch.Tensor) -> None:
        """Few rows (fewer than table codes, e.g. a training batch of a linear layer): one gather per MAC from
        the product table, no per-layer tables built."""
        m, g = cols.shape[0], self.groups
        a = cols.reshape(m, g, 1, self.k).long() - self._a_lo
        flat = self._table_t.t().to(acc.dtype).contiguous().reshape(-1)  # [w * A + a]
        step = max(1, _ROWS_PER_PASS // max(1, self.o_per_group * g * self.k))
        for i in range(0, m, step):
            idx = (self._wg * self._n_a)[None] + a[i:i + step]  # (M', G, Og, Kg)
            acc[i:i + step] += flat[idx].sum(-1).reshape(idx.shape[0], -1)

    def _bags(self, idx: torch.Tensor, acc: torch.Tensor) -> None:
        """Add the bag sums of lookup rows ``idx`` (M, G, Kg) (one-chunk row numbers) to ``acc`` (M, O)."""
        m, g = idx.shape[0], self.groups
        if self.n_chunks == 1:
            out = F.embedding_bag(idx.reshape(m * g, self.k), self._table(0), mode="sum").reshape(m, -1)
            acc.copy_(out)
            return
        for j in range(self.n_chunks):
            lo, hi = self._chunk_span(j)
            shift = (torch.arange(g, device=idx.device, dtype=torch.int32) * (self.k - (hi - lo)) + lo) * self._n_a
            part = idx[:, :, lo:hi] - shift[:, None]  # contiguous (M, G, kcj)
            acc += F.embedding_bag(part.reshape(m * g, hi - lo), self._table(j), mode="sum").reshape(m, -1)

    def _conv_rows(self, xp: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
        """Lookup rows (N * oh * ow, G, Kg) of padded channels-last int32 codes ``xp`` (N, Hp, Wp, C)."""
        geo = self.geo
        assert geo is not None
        n, c = xp.shape[0], xp.shape[3]
        kh, kw = geo.kernel
        g, cg = self.groups, c // self.groups
        sn, sh, sw, sc = xp.stride()
        view = xp.as_strided((n, oh, ow, g, kh, kw, cg),
                             (sn, sh * geo.stride[0], sw * geo.stride[1], sc * cg, sh * geo.dilation[0],
                              sw * geo.dilation[1], sc))
        idx = torch.empty(n, oh, ow, g, kh, kw, cg, dtype=torch.int32, device=xp.device)
        torch.add(view, self._koff.reshape(g, kh, kw, cg), out=idx)
        return idx.reshape(n * oh * ow, g, self.k)

    def accumulate(self, x: torch.Tensor, pad_code: int) -> torch.Tensor:
        o = self.groups * self.o_per_group
        xi = x.to(torch.int32)
        if self.geo is None:
            acc = torch.empty(x.shape[0], o, dtype=self.dtype, device=x.device)
            if x.shape[0] < self._n_a and self._chunks is None:
                acc.zero_()
                self._direct(xi, acc)
                return acc
            if self.n_chunks > 1:
                acc.zero_()
            step = max(1, _ROWS_PER_PASS // max(1, x.shape[1]))
            for i in range(0, x.shape[0], step):
                rows = torch.add(xi[i:i + step].reshape(-1, 1, self.k), self._koff)
                self._bags(rows, acc[i:i + step])
            return acc
        geo = self.geo
        n = x.shape[0]
        oh, ow = geo.out_hw(x.shape[2], x.shape[3])
        xp = _pad_codes(xi, geo, pad_code).permute(0, 2, 3, 1).contiguous()  # (N, Hp, Wp, C)
        acc = (torch.zeros if self.n_chunks > 1 else torch.empty)(n * oh * ow, o, dtype=self.dtype, device=x.device)
        per_image = oh * ow * self.groups * self.k
        step = max(1, _ROWS_PER_PASS // max(1, per_image))
        for i in range(0, n, step):
            self._bags(self._conv_rows(xp[i:i + step], oh, ow), acc[i * oh * ow:(i + step) * oh * ow])
        return acc.reshape(n, oh, ow, o).permute(0, 3, 1, 2)


class DepthwiseLookupKernel(LayerKernel):
    """Lookups for a depthwise-style convolution (one input channel per group): one ``embedding`` per kernel tap
    over rows ``(c, a)`` holding ``T[w_{c, og, t}, a]`` for the channel's ``Og`` outputs, indexed by the shifted
    padded codes, the taps' values summed. The general bag layout would need one index per (pixel, channel,
    tap) in tap-innermost order, whose construction from strided views costs several times the lookups; per
    tap, every index tensor is a contiguous copy of a shifted slice. Images are taken in blocks that keep the
    index and value tensors in cache."""

    method = "lookup"

    def __init__(self, w_codes: torch.Tensor, table: np.ndarray, w_lo: int, a_lo: int, geo: ConvGeometry) -> None:
        self.geo = geo
        o, dev = w_codes.shape[0], w_codes.device
        c = geo.groups
        self.channels, self.o_per_group = c, o // c
        n_a = table.shape[1]
        tmax = float(np.abs(table).max()) if table.size else 0.0
        taps = geo.kernel[0] * geo.kernel[1]
        self.dtype = torch.float32 if taps * tmax < _F32_EXACT else torch.float64
        table_t = torch.as_tensor(table.T, dtype=self.dtype, device=dev)  # [a, w]
        wl = (w_codes.long() - w_lo).reshape(c, self.o_per_group, taps)
        # tap t: rows (c, a) x columns og
        self._tables = [table_t[:, wl[:, :, t]].permute(1, 0, 2).reshape(c * n_a, self.o_per_group).contiguous()
                        for t in range(taps)]
        self._coff = ((torch.arange(c, device=dev) * n_a - a_lo).to(torch.int32)).reshape(1, c, 1, 1)

    def accumulate(self, x: torch.Tensor, pad_code: int) -> torch.Tensor:
        geo = self.geo
        n = x.shape[0]
        oh, ow = geo.out_hw(x.shape[2], x.shape[3])
        xo = _pad_codes(x.to(torch.int32), geo, pad_code) + self._coff  # row numbers of tap tables, (N, C, Hp, Wp)
        og = self.o_per_group
        acc = torch.zeros(n, self.channels, oh, ow, og, dtype=self.dtype, device=x.device)
        step = max(1, _DEPTHWISE_ELEMS_PER_PASS // max(1, xo[0].numel()))
        (sh, sw), (dh, dw) = geo.stride, geo.dilation
        for i in range(0, n, step):
            blk = xo[i:i + step]
            out = acc[i:i + step]
            for t, tab in enumerate(self._tables):
                dy, dx = divmod(t, geo.kernel[1])
                rows = blk[:, :, dy * dh:dy * dh + sh * (oh - 1) + 1:sh, dx * dw:dx * dw + sw * (ow - 1) + 1:sw]
                out += F.embedding(rows.contiguous(), tab)
        if og == 1:
            return acc.reshape(n, self.channels, oh, ow)
        return acc.permute(0, 1, 4, 2, 3).reshape(n, self.channels * og, oh, ow)


def _lookup_kernel(w_codes: torch.Tensor, table: np.ndarray, w_lo: int, a_lo: int,
                   geo: ConvGeometry | None) -> LayerKernel:
    if geo is not None and geo.groups > 1 and w_codes.shape[1] == 1:
        return DepthwiseLookupKernel(w_codes, table, w_lo, a_lo, geo)
    return LookupKernel(w_codes, table, w_lo, a_lo, geo)


class TunedKernel(LayerKernel):
    """``auto`` for a table with both kernels at hand (exact rank 2 to :data:`TUNE_MAX_RANK`): which is faster
    depends on the layer's shape and the machine (a rank-R stacked convolution costs about R convolutions, a
    lookup pass a multiple of one that shrinks with the number of outputs), so the first call with at least
    :data:`TUNE_MIN_ROWS` output rows times each kernel once, after a one-row warm-up that builds its tables,
    and keeps the faster. Both give the same bits, so the choice changes speed only. Until then (and for
    smaller calls) the rank rule picks: factors up to :data:`FACTOR_MAX_RANK`, else lookups."""

    def __init__(self, factors: FactorKernel, lookup: LayerKernel) -> None:
        self.geo = factors.geo
        self._kernels: dict[str, LayerKernel] = {"factors": factors, "lookup": lookup}
        self._rule = "factors" if factors.fac.rank <= FACTOR_MAX_RANK else "lookup"
        self.choice: str | None = None
        self.seconds: dict[str, float] = {}

    @property
    def method(self) -> str:  # type: ignore[override]
        return self.choice or self._rule

    def _rows(self, x: torch.Tensor) -> int:
        if self.geo is None:
            return int(x.shape[0])
        oh, ow = self.geo.out_hw(x.shape[2], x.shape[3])
        return int(x.shape[0]) * oh * ow

    def accumulate(self, x: torch.Tensor, pad_code: int) -> torch.Tensor:
        if self.choice is not None or self._rows(x) < TUNE_MIN_ROWS or x.shape[0] < 2:
            return self._kernels[self.method].accumulate(x, pad_code)
        out = None
        for name, kern in self._kernels.items():
            kern.accumulate(x[:1], pad_code)
            _sync(x)
            t0 = time.perf_counter()
            out = kern.accumulate(x, pad_code)
            _sync(x)
            self.seconds[name] = time.perf_counter() - t0
        self.choice = min(self.seconds, key=self.seconds.__getitem__)
        self._kernels = {self.choice: self._kernels[self.choice]}  # the other's tables are freed
        assert out is not None
        return out


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def build_kernel(w_codes: torch.Tensor, table: np.ndarray, w_lo: int, a_lo: int, geo: ConvGeometry | None,
                 method: Method = "auto") -> LayerKernel:
    """The accumulation kernel of integer weight codes (O, Cg, kh, kw) / (O, K) under ``table``
    (indexed ``[w - w_lo, a - a_lo]``). ``auto``: factors for an exact rank of 1 (one convolution), lookups
    when the table has no exact factorization of rank up to :data:`TUNE_MAX_RANK`, and in between the faster
    of the two, timed on the first call (:class:`TunedKernel`), unless the layer's lookup tables would exceed
    :data:`_TABLE_CHUNK_ELEMS` floats (the rank rule then, without building them)."""
    if method not in ("auto", "factors", "lookup"):
        raise ValueError(f"method must be auto, factors or lookup, got {method!r}")
    if method != "lookup":
        fac = table_factors(table, w_lo, a_lo, max_rank=TUNE_MAX_RANK if method == "auto" else 64)
        if fac is None and method == "factors":
            raise ValueError("the product table has no exact low-rank factorization; use method='lookup'")
        if fac is not None:
            if method == "factors" or fac.rank == 1:
                return FactorKernel(w_codes, fac, geo)
            if table.shape[1] * w_codes.numel() <= _TABLE_CHUNK_ELEMS:
                return TunedKernel(FactorKernel(w_codes, fac, geo), _lookup_kernel(w_codes, table, w_lo, a_lo, geo))
            if fac.rank <= FACTOR_MAX_RANK:  # tables above 64 MiB are not built just to be timed: the rank rule
                return FactorKernel(w_codes, fac, geo)
    return _lookup_kernel(w_codes, table, w_lo, a_lo, geo)
