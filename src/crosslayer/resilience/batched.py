"""Evaluate many single-weight faults of one layer in one vectorised forward pass.

A fault that changes one weight ``W[o, ...]`` by ``d`` changes only output channel (neuron) ``o`` of
its layer, by ``d`` times one slice of the layer's input: ``d * x[:, i]`` for a linear layer,
``d * x_pad[:, c, kh::stride, kw::stride]`` for a convolution. So instead of rebuilding the model per
fault (as PyTorchFI does), a forward hook on the faulty layer takes the clean output of a batch of
``B`` images, stacks ``K`` copies, adds each fault's rank-one correction and lets the rest of the
network run on the ``K * B`` batch. The layers before the faulty one run once per ``B`` images,
not once per fault. Hand-written because no fault-injection library exploits this structure.

Assumes the layers after the faulty one treat the batch dimension independently (true for
feed-forward CNNs; not for e.g. batch-norm in training mode, so the model is put in eval mode).
Anything else (padding modes other than zeros, string padding, inputs with extra dims) falls back
to patching the weight and running the full model per fault.

:func:`campaign_correct_counts` goes further for whole campaigns (faults in several layers): the model
is traced once with ``torch.fx`` and cut at every faulty layer. One clean forward pass per image
batch records, for every cut, the layer's input and output and any earlier value used after it
(skip connections); each fault group then runs only the *suffix* of the network, from the faulty
layer's corrected output onwards, on the ``K * B`` stacked batch. The layers before a faulty layer
therefore run once per image for the whole campaign, not once per fault or per chunk of faults.
Models that cannot be traced, or layers called more than once, use :func:`fault_correct_counts` (whose
hook path falls back to patching the weight when the stacked batch meets a clean one, as in a skip
connection).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn import functional as F

from crosslayer.quant import QuantLayer
from crosslayer.resilience.inject import patched_weights

__all__ = ["campaign_correct_counts", "correct_counts", "fault_correct_counts"]

log = logging.getLogger(__name__)


def correct_counts(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> int:
    """How many of ``images`` the model classifies correctly."""
    dev = next(model.parameters()).device
    total = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out = model(images[i:i + batch_size].to(dev))
            total += int((out.argmax(1).cpu() == labels[i:i + batch_size]).sum())
    return total


def _supports_delta(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.Conv2d):
        return m.padding_mode == "zeros" and not isinstance(m.padding, str)
    return False


def _delta_output(m: nn.Module, x: torch.Tensor, out: torch.Tensor, pos: tuple[torch.Tensor, ...],
                  delta: torch.Tensor) -> torch.Tensor:
    """``K`` faulty copies of ``out`` (shape ``(K * B, ...)``) for weight changes ``delta`` at ``pos``."""
    k = delta.numel()
    b = out.shape[0]
    if isinstance(m, QuantLayer):
        x = m.quant_input(x)
    rep = out.unsqueeze(0).repeat(k, *([1] * out.dim()))
    ar = torch.arange(k, device=out.device)
    if isinstance(m, nn.Linear):
        o, i = pos
        contrib = x[:, i].T * delta[:, None]  # (K, B)
        rep[ar, :, o] += contrib
    else:
        assert isinstance(m, nn.Conv2d)
        o, c, kh, kw = pos
        assert not isinstance(m.padding, str)  # _supports_delta ruled string padding out
        ph, pw = m.padding
        sh, sw = m.stride
        dh, dw = m.dilation
        hout, wout = out.shape[2], out.shape[3]
        xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
        cin = (o // (m.out_channels // m.groups)) * (m.in_channels // m.groups) + c
        rows = kh[:, None] * dh + sh * torch.arange(hout, device=x.device)[None, :]  # (K, Hout)
        cols = kw[:, None] * dw + sw * torch.arange(wout, device=x.device)[None, :]  # (K, Wout)
        sl = xp[:, cin[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, K, Hout, Wout)
        rep[ar, :, o] += sl.transpose(0, 1) * delta[:, None, None, None]
    return rep.reshape(k * b, *out.shape[1:])


def fault_correct_counts(model: nn.Module, layer: str, index: torch.Tensor, values: torch.Tensor,
                         images: torch.Tensor, labels: torch.Tensor, *, budget_elems: int = 1 << 24,
                         max_faults_per_pass: int = 128, method: str = "auto") -> torch.Tensor:
    """Correctly classified images under each single fault ``weight.flat[index[k]] = values[k]`` of ``layer``.

    Returns an int64 tensor of length ``K``. ``method``: ``auto`` (batched rank-one corrections when the
    layer allows it) or ``direct`` (patch the weight, run the whole model, restore; the reference).
    ``budget_elems`` bounds the faulty layer's stacked output (``K * B`` images) per pass.
    """
    m = model.get_submodule(layer)
    w: torch.Tensor = m.weight  # type: ignore[assignment]
    index = index.to(torch.int64).reshape(-1).cpu()
    values = values.to(torch.float32).reshape(-1).cpu()
    was_training = model.training
    model.eval()
    counts = torch.zeros(index.numel(), dtype=torch.int64)
    try:
        if method == "direct" or not _supports_delta(m):
            return _direct_counts(model, w, index, values, images, labels)
        dev = w.device
        old = w.detach().reshape(-1)[index.to(dev)].cpu()
        delta = values - old
        pos = torch.unravel_index(index, tuple(w.shape))
        per_image = _output_numel(model, m, images[:1].to(dev))
        rows = max(1, budget_elems // max(1, per_image))
        k_pass = max(1, min(max_faults_per_pass, index.numel(), rows))
        b_pass = max(1, min(len(images), rows // k_pass))
        state: dict[str, object] = {}

        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            sel = state["sel"]
            assert isinstance(sel, slice)
            p = tuple(t[sel].to(dev) for t in pos)
            return _delta_output(mod, inp[0], out, p, delta[sel].to(dev, out.dtype))

        handle = m.register_forward_hook(hook)
        try:
            with torch.inference_mode():
                for i in range(0, len(images), b_pass):
                    x = images[i:i + b_pass].to(dev)
                    y = labels[i:i + b_pass]
                    for s in range(0, index.numel(), k_pass):
                        sel = slice(s, min(s + k_pass, index.numel()))
                        state["sel"] = sel
                        logits = model(x)
                        kk = sel.stop - sel.start
                        pred = logits.reshape(kk, len(y), -1).argmax(2).cpu()
                        counts[sel] += (pred == y[None, :]).sum(1)
        except RuntimeError as exc:  # e.g. a skip connection mixes the stacked and the clean batch
            log.info("batched fault evaluation of %s failed (%s); patching weights instead", layer, exc)
            failed = True
        else:
            failed = False
        finally:
            handle.remove()
        return _direct_counts(model, w, index, values, images, labels) if failed else counts
    finally:
        model.train(was_training)


def _direct_counts(model: nn.Module, w: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
                   images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference: patch one weight, run the whole model, restore; per fault."""
    counts = torch.zeros(index.numel(), dtype=torch.int64)
    for k in range(index.numel()):
        with patched_weights(w, index[k:k + 1], values[k:k + 1]):
            counts[k] = correct_counts(model, images, labels)
    return counts


def _output_numel(model: nn.Module, m: nn.Module, x: torch.Tensor) -> int:
    """Per-image size of ``m``'s output (one probe forward)."""
    seen: list[int] = []
    h = m.register_forward_hook(lambda _m, _i, out: seen.append(out[0].numel()))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        h.remove()
    return seen[0] if seen else 1


@dataclass
class _Cut:
    """One faulty layer of a traced model: where its clean input / output / live values sit in the capture
    outputs, and the suffix graph ``suffix(faulty_output, *live) -> logits``."""

    module: nn.Module
    inp: int
    out: int
    live: list[int]
    suffix: fx.GraphModule


class _CutTracer(fx.Tracer):
    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (module_qualified_name in self.leaves or isinstance(m, QuantLayer)
                or super().is_leaf_module(m, module_qualified_name))


def _plan(model: nn.Module, layers: list[str]) -> tuple[fx.GraphModule | None, dict[str, _Cut]]:
    """The capture graph (``(logits, *captured values)``) and a cut per layer it can serve."""
    try:
        graph = _CutTracer(set(layers)).trace(model)
    except Exception as exc:  # any tracing failure: the per-layer hook path is the fallback
        log.info("model not traceable with torch.fx (%s); faults evaluated per layer", exc)
        return None, {}
    nodes = list(graph.nodes)
    out_node = nodes[-1]
    if out_node.op != "output":
        return None, {}
    captured: list[fx.Node] = []

    def cap(n: fx.Node) -> int:
        if n not in captured:
            captured.append(n)
        return captured.index(n)

    cuts: dict[str, _Cut] = {}
    for layer in layers:
        m = model.get_submodule(layer)
        calls = [n for n in nodes if n.op == "call_module" and n.target == layer]
        if not _supports_delta(m) or len(calls) != 1 or len(calls[0].args) != 1 or calls[0].kwargs \
                or not isinstance(calls[0].args[0], fx.Node):
            continue
        cut = calls[0]
        pos = nodes.index(cut)
        after = nodes[pos + 1:]
        after_set = set(after)
        sg = fx.Graph()
        env: dict[fx.Node, fx.Node] = {cut: sg.placeholder("faulty_out")}
        live: list[fx.Node] = []
        for n in nodes[:pos]:
            if not any(u in after_set for u in n.users):
                continue
            if n.op == "get_attr":  # a parameter or buffer, not a per-image value: re-read it in the suffix
                env[n] = sg.node_copy(n)
            else:
                live.append(n)
                env[n] = sg.placeholder(f"live_{len(live)}")
        for n in after:
            env[n] = sg.node_copy(n, lambda a, env=env: env[a])  # type: ignore[misc]
        cuts[layer] = _Cut(m, cap(cut.args[0]), cap(cut), [cap(n) for n in live], fx.GraphModule(model, sg))
    if not cuts:
        return None, {}
    cg = fx.Graph()
    cenv: dict[fx.Node, fx.Node] = {}
    for n in nodes[:-1]:
        cenv[n] = cg.node_copy(n, lambda a: cenv[a])
    cg.output((fx.map_arg(out_node.args[0], lambda a: cenv[a]), *(cenv[n] for n in captured)))
    return fx.GraphModule(model, cg), cuts


def campaign_correct_counts(model: nn.Module, faults: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                            images: torch.Tensor, labels: torch.Tensor, *, budget_elems: int = 1 << 24,
                            max_faults_per_pass: int = 256) -> tuple[int, dict[str, torch.Tensor]]:
    """Correctly classified images without faults, and under each single fault of every layer:
    ``faults[layer] = (flat indices, new values)``, one fault per entry (``weight.flat[index[k]] = values[k]``).

    Returns ``(clean count, {layer: int64 counts})``. See the module docstring: one clean pass per image
    batch feeds every layer's faults, which each run only the network after their layer.
    ``budget_elems`` bounds the captured activations of one image batch and each stacked suffix batch.
    """
    names = [n for n, (i, _) in faults.items() if i.numel()]
    counts = {n: torch.zeros(int(faults[n][0].numel()), dtype=torch.int64) for n in faults}
    was_training = model.training
    model.eval()
    try:
        capture, cuts = _plan(model, names)
        dev = next(model.parameters()).device
        if capture is not None and len(images) >= 2:
            with torch.inference_mode():
                probe = capture(images[:2].to(dev))
            for n in list(cuts):  # a value the suffix reads that is not per image: per-layer path
                if any(not isinstance(probe[1 + j], torch.Tensor) or probe[1 + j].shape[:1] != (2,)
                       for j in cuts[n].live):
                    del cuts[n]
        elif capture is not None:
            cuts = {}
        for n in [n for n in names if n not in cuts]:  # untraceable model or layer: the per-layer hook path
            index, values = faults[n]
            counts[n] = fault_correct_counts(model, n, index, values, images, labels,
                                             budget_elems=budget_elems, max_faults_per_pass=max_faults_per_pass)
        if capture is None or not cuts:
            return correct_counts(model, images, labels), counts
        prepared = {}
        for n, cut in cuts.items():
            w: torch.Tensor = cut.module.weight  # type: ignore[assignment]
            index = faults[n][0].to(torch.int64).reshape(-1).cpu()
            values = faults[n][1].to(torch.float32).reshape(-1).cpu()
            delta = (values - w.detach().reshape(-1)[index.to(w.device)].cpu()).to(dev)
            pos = tuple(t.to(dev) for t in torch.unravel_index(index, tuple(w.shape)))
            prepared[n] = (pos, delta)
        with torch.inference_mode():
            per_image = sum(int(t[0].numel()) for t in probe[1:])
            b_pass = max(1, min(len(images), budget_elems // max(1, per_image)))
            base = 0
            for i in range(0, len(images), b_pass):
                x = images[i:i + b_pass].to(dev)
                y = labels[i:i + b_pass].to(dev)
                outs = capture(x)
                base += int((outs[0].argmax(1) == y).sum())
                b = len(y)
                for n, cut in cuts.items():
                    pos, delta = prepared[n]
                    inp, out = outs[1 + cut.inp], outs[1 + cut.out]
                    live = [outs[1 + j] for j in cut.live]
                    k_all = delta.numel()
                    k_pass = max(1, min(max_faults_per_pass, k_all, budget_elems // max(1, out[0].numel() * b)))
                    for s in range(0, k_all, k_pass):
                        sel = slice(s, min(s + k_pass, k_all))
                        kk = sel.stop - sel.start
                        faulty = _delta_output(cut.module, inp, out, tuple(t[sel] for t in pos),
                                               delta[sel].to(out.dtype))
                        reps = [v.repeat(kk, *([1] * (v.dim() - 1))) for v in live]
                        logits = cut.suffix(faulty, *reps)
                        pred = logits.reshape(kk, b, -1).argmax(2)
                        counts[n][sel] += (pred == y[None, :]).sum(1).cpu()
        return base, counts
    finally:
        model.train(was_training)
