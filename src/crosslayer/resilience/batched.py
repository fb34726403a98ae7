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

:func:`campaign_correct_counts` goes further for whole campaigns (faults in several layers): the model is
traced once with ``torch.fx``, one clean pass per image batch records every value, and each fault's
difference is propagated sparsely through the network after its layer (:mod:`crosslayer.resilience.delta`):
the layers before a faulty layer run once per image for the whole campaign, and the layers after it only
on what the fault changed while that stays confined to a channel or a block of features. Models that
cannot be traced, or layers called more than once, use :func:`fault_correct_counts` (whose hook path falls
back to patching the weight when the stacked batch meets a clean one, as in a skip connection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.quant import QuantLayer
from crosslayer.resilience.delta import DeltaPlan, delta_plan
from crosslayer.resilience.inject import patched_weights
from crosslayer.resilience.lipschitz import margin_radius

__all__ = ["campaign_correct_counts", "correct_counts", "fault_correct_counts", "faults_by_position", "run_campaign"]

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


def faults_by_position(weight: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
                       device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Positions (unravelled flat ``index``) and weight differences ``values - weight.flat[index]``."""
    index = index.to(torch.int64).reshape(-1).cpu()
    values = values.to(torch.float32).reshape(-1).cpu()
    delta = (values - weight.detach().reshape(-1)[index.to(weight.device)].cpu()).to(device)
    pos = tuple(t.to(device) for t in torch.unravel_index(index, tuple(weight.shape)))
    return pos, delta


def run_campaign(plan: DeltaPlan, faults: Mapping[str, tuple[torch.Tensor, torch.Tensor]], images: torch.Tensor,
                 labels: torch.Tensor, counts: dict[str, torch.Tensor], *, budget_elems: int,
                 max_faults_per_pass: int, certify: bool = True, timings: dict[str, float] | None = None) -> int:
    """Add each fault's correct count over ``images`` to ``counts[layer]`` for the layers in ``plan.cuts``;
    returns the clean correct count. ``certify``: skip pairs a Lipschitz margin certificate settles.
    ``timings`` (optional) receives seconds: ``"clean pass"`` (recording, certificates' set-up) and per layer."""
    clock = timings if timings is not None else {}
    t0 = time.perf_counter()
    dev = next(plan.model.parameters()).device
    prepared = {n: faults_by_position(plan.model.get_submodule(n).weight, *faults[n], dev)  # type: ignore[arg-type]
                for n in plan.cuts}
    sizes = plan.per_image_sizes(images[:1].to(dev))
    plan.prepare_certificates(images[:1].to(dev))
    per_image = sum(sizes)
    # rows of one fault: its largest value after the faulty layer (whose own output change is one channel)
    suffix = {n: max([1, *sizes[plan.index[c] + 1:]]) for n, c in plan.cuts.items()}
    b_pass = max(1, min(len(images), budget_elems // max(1, per_image)))
    base = 0
    out_i = plan.index[plan.out_node]
    clock["clean pass"] = clock.get("clean pass", 0.0) + time.perf_counter() - t0
    with torch.inference_mode():
        for i in range(0, len(images), b_pass):
            t0 = time.perf_counter()
            x = images[i:i + b_pass].to(dev)
            y = labels[i:i + b_pass].to(dev)
            with plan.no_inplace:
                clean = list(plan.capture(x))
            ok = clean[out_i].argmax(-1) == y
            base += int(ok.sum())
            radius = margin_radius(clean[out_i].float(), plan.head.float()) if certify and plan.head is not None \
                else None
            b = len(y)
            clock["clean pass"] += time.perf_counter() - t0
            for n in plan.cuts:
                t0 = time.perf_counter()
                pos, delta = prepared[n]
                k_all = delta.numel()
                k_pass = max(1, min(max_faults_per_pass, k_all, budget_elems // max(1, suffix[n] * b)))
                for s in range(0, k_all, k_pass):
                    sel = slice(s, min(s + k_pass, k_all))
                    fault, img, pred = plan.predictions(n, clean, tuple(t[sel] for t in pos),
                                                        delta[sel].to(clean[out_i].dtype), radius)
                    change = (pred == y[img]).long() - ok[img].long()  # evaluated pairs differ from clean by this
                    per_fault = torch.zeros(sel.stop - sel.start, dtype=torch.long, device=dev)
                    per_fault.index_add_(0, fault, change)
                    counts[n][sel] += (int(ok.sum()) + per_fault).cpu()
                clock[n] = clock.get(n, 0.0) + time.perf_counter() - t0
    return base


def campaign_correct_counts(model: nn.Module, faults: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                            images: torch.Tensor, labels: torch.Tensor, *, budget_elems: int = 1 << 24,
                            max_faults_per_pass: int = 256,
                            timings: dict[str, float] | None = None) -> tuple[int, dict[str, torch.Tensor]]:
    """Correctly classified images without faults, and under each single fault of every layer:
    ``faults[layer] = (flat indices, new values)``, one fault per entry (``weight.flat[index[k]] = values[k]``).

    Returns ``(clean count, {layer: int64 counts})``. One clean pass per image batch feeds every layer's
    faults, whose differences are propagated sparsely through the rest of the network
    (:mod:`crosslayer.resilience.delta`). ``budget_elems`` bounds the recorded activations of one image
    batch and each stacked batch of faults. ``timings`` (optional) receives the seconds of the shared clean
    pass and of each layer's faults (layers evaluated by the per-layer fallback included).
    """
    names = [n for n, (i, _) in faults.items() if i.numel()]
    counts = {n: torch.zeros(int(faults[n][0].numel()), dtype=torch.int64) for n in faults}
    was_training = model.training
    model.eval()
    try:
        plan = delta_plan(model, names) if len(images) >= 1 else None
        dev = next(model.parameters()).device
        if plan is not None and not plan.probe(images[:1].to(dev)):
            plan = None
        served = list(plan.cuts) if plan is not None else []
        base = None
        if plan is not None:
            try:
                base = run_campaign(plan, faults, images, labels, counts, budget_elems=budget_elems,
                                    max_faults_per_pass=max_faults_per_pass, timings=timings)
            except RuntimeError as exc:  # an operation the stacked batch does not fit (e.g. a batch-sized reshape)
                log.info("sparse-difference fault evaluation failed (%s); faults evaluated per layer", exc)
                served = []
                counts = {n: torch.zeros_like(c) for n, c in counts.items()}
        for n in [n for n in names if n not in served]:  # untraceable model or layer: the per-layer hook path
            index, values = faults[n]
            t0 = time.perf_counter()
            counts[n] = fault_correct_counts(model, n, index, values, images, labels,
                                             budget_elems=budget_elems, max_faults_per_pass=max_faults_per_pass)
            if timings is not None:
                timings[n] = timings.get(n, 0.0) + time.perf_counter() - t0
        if base is None or not served:
            base = correct_counts(model, images, labels)
        return base, counts
    finally:
        model.train(was_training)
