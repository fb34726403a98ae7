"""Layer shapes: the torch-free workload the cost model consumes (one frozen dataclass per layer).

Convolutions follow the usual 7-loop nest (N, M, C, P, Q, R, S; Sze et al., "Efficient Processing of
Deep Neural Networks: A Tutorial and Survey", Proc. IEEE 2017). A linear layer is a 1x1 convolution on a
1x1 map, or on a T x 1 map when it is applied to T tokens per sample (``in_h = T``); a depthwise convolution
is ``groups = C`` independent single-channel convolutions; pooling has no MACs but moves its input and output
through the memory hierarchy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from crosslayer.hw.errors import HardwareConfigError

__all__ = ["LayerKind", "LayerShape", "ceil_div", "conv", "distinct_ceils", "linear"]

LayerKind = Literal["conv", "dwconv", "linear", "pool"]
_KINDS = ("conv", "dwconv", "linear", "pool")
# Upper bounds far beyond real layers that keep every count an exact integer and every energy finite.
_LIMITS = {"in_channels": 1 << 20, "out_channels": 1 << 20, "in_h": 1 << 16, "in_w": 1 << 16, "kernel_h": 1 << 10,
           "kernel_w": 1 << 10, "stride": 1 << 10, "groups": 1 << 20, "batch": 1 << 16, "weight_bits": 64,
           "act_bits": 64}
MAX_OPS = 1 << 40


@dataclass(frozen=True, kw_only=True)
class LayerShape:
    """One layer of a workload. Sizes are per inference (``batch`` images); densities are the measured
    fraction of non-zero weights / input activations; ``filter_nnz`` the non-zero weights of each output
    channel (for load-imbalance analysis; empty means uniform)."""

    name: str
    kind: LayerKind
    in_channels: int
    out_channels: int
    in_h: int = 1
    in_w: int = 1
    kernel_h: int = 1
    kernel_w: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    batch: int = 1
    weight_bits: int = 16
    act_bits: int = 16
    weight_density: float = 1.0
    act_density: float = 1.0
    filter_nnz: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        where = f"layer {self.name!r}"
        if not isinstance(self.name, str):
            raise HardwareConfigError(f"{where}: name must be text")
        if self.kind not in _KINDS:
            raise HardwareConfigError(f"{where}: kind = {self.kind!r} is unknown; allowed: {', '.join(_KINDS)}")
        for f, hi in _LIMITS.items():
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise HardwareConfigError(f"{where}: {f} = {v!r} must be a positive integer")
            if v > hi:
                raise HardwareConfigError(f"{where}: {f} = {v!r} is out of range; allowed [1, {hi}]")
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or not 0 <= self.padding <= 1 << 10:
            raise HardwareConfigError(f"{where}: padding = {self.padding!r} must be an integer in [0, 1024]")
        for f in ("weight_density", "act_density"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise HardwareConfigError(f"{where}: {f} = {v!r} must lie in [0, 1]")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise HardwareConfigError(f"{where}: groups = {self.groups} must divide in_channels = {self.in_channels} "
                                      f"and out_channels = {self.out_channels}")
        if self.kind == "dwconv" and self.groups != self.in_channels:
            raise HardwareConfigError(f"{where}: a dwconv needs groups = in_channels = {self.in_channels}")
        if self.kernel_h > self.in_h + 2 * self.padding or self.kernel_w > self.in_w + 2 * self.padding:
            raise HardwareConfigError(f"{where}: kernel {self.kernel_h}x{self.kernel_w} is larger than the padded "
                                      f"input {self.in_h + 2 * self.padding}x{self.in_w + 2 * self.padding}")
        if self.filter_nnz and len(self.filter_nnz) != self.out_channels:
            raise HardwareConfigError(f"{where}: filter_nnz has {len(self.filter_nnz)} entries, "
                                      f"expected out_channels = {self.out_channels}")
        per_filter = self.channels_per_group * self.kernel_h * self.kernel_w
        if self.filter_nnz and (min(self.filter_nnz) < 0 or max(self.filter_nnz) > per_filter):
            raise HardwareConfigError(f"{where}: filter_nnz entries must lie in [0, {per_filter}] "
                                      "(the weights of one filter)")
        if self.ops > MAX_OPS or self.input_count > MAX_OPS:
            raise HardwareConfigError(f"{where}: {max(self.ops, self.input_count)} operations or inputs per "
                                      f"inference is out of range; at most {MAX_OPS} are modelled")

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def out_h(self) -> int:
        return (self.in_h + 2 * self.padding - self.kernel_h) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.in_w + 2 * self.padding - self.kernel_w) // self.stride + 1

    @property
    def channels_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def filters_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def macs(self) -> int:
        if self.kind == "pool":
            return 0
        return (self.batch * self.out_channels * self.out_h * self.out_w * self.channels_per_group
                * self.kernel_h * self.kernel_w)

    @property
    def ops(self) -> int:
        """MACs, or comparisons / additions for pooling."""
        if self.kind == "pool":
            return self.batch * self.out_channels * self.out_h * self.out_w * self.kernel_h * self.kernel_w
        return self.macs

    @property
    def weight_count(self) -> int:
        if self.kind == "pool":
            return 0
        return self.out_channels * self.channels_per_group * self.kernel_h * self.kernel_w

    @property
    def input_count(self) -> int:
        return self.batch * self.in_channels * self.in_h * self.in_w

    @property
    def output_count(self) -> int:
        return self.batch * self.out_channels * self.out_h * self.out_w

    @property
    def geometry(self) -> tuple[str, int, int, int, int, int, int, int, int, int, int]:
        """Every field that fixes the loop nest (not bit widths or densities): the key of shape caches."""
        return (self.kind, self.in_channels, self.out_channels, self.in_h, self.in_w, self.kernel_h, self.kernel_w,
                self.stride, self.padding, self.groups, self.batch)

    def gemm(self) -> tuple[int, int, int, int]:
        """``(groups, Sr, T, Sc)``: the layer as ``groups`` matrix products of an (Sr x T) im2col input
        by a (T x Sc) weight matrix (SCALE-Sim's operand matrices; Samajdar et al., ISPASS 2020)."""
        return (self.groups, self.batch * self.out_h * self.out_w,
                self.channels_per_group * self.kernel_h * self.kernel_w, self.filters_per_group)


def conv(name: str, in_channels: int, out_channels: int, size: int | tuple[int, int], kernel: int | tuple[int, int],
         *, stride: int = 1, padding: int = 0, groups: int = 1, **kw: object) -> LayerShape:
    """Shorthand for a convolution layer shape (``groups == in_channels`` gives a depthwise one)."""
    h, w = (size, size) if isinstance(size, int) else size
    kh, kw_ = (kernel, kernel) if isinstance(kernel, int) else kernel
    kind: LayerKind = "dwconv" if groups > 1 and groups == in_channels else "conv"
    return LayerShape(name=name, kind=kind, in_channels=in_channels, out_channels=out_channels, in_h=h, in_w=w,
                      kernel_h=kh, kernel_w=kw_, stride=stride, padding=padding, groups=groups, **kw)  # type: ignore[arg-type]


def linear(name: str, in_features: int, out_features: int, **kw: object) -> LayerShape:
    """Shorthand for a fully connected layer shape."""
    return LayerShape(name=name, kind="linear", in_channels=in_features, out_channels=out_features,
                      **kw)  # type: ignore[arg-type]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@lru_cache(maxsize=8192)
def distinct_ceils(d: int) -> tuple[int, ...]:
    """``sorted({ceil(d / k) for k in 1..d})``, the tile sizes (or per-PE counts) whose pass counts
    ``ceil(d / size)`` differ, in O(sqrt d): with ``n = d - 1``, ``ceil(d / k) = n // k + 1``, and the
    values of ``n // k`` are those for ``k <= sqrt(n)`` plus every ``v <= n // (isqrt(n) + 1)`` and 0."""
    if d <= 0:
        raise HardwareConfigError(f"dimension = {d} must be positive")
    n = d - 1
    root = math.isqrt(n)
    vals = {n // k for k in range(1, root + 1)}
    vals.update(range(0, n // (root + 1) + 1))
    return tuple(sorted(v + 1 for v in vals))

