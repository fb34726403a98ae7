"""Model checkpoints that are data, not code: a state dict plus a small architecture record.

A checkpoint never holds a pickled module (unpickling runs arbitrary code). It is two files:

- ``NAME.pt``: the state dict, a flat ``{name: tensor}`` mapping read back with
  ``torch.load(..., weights_only=True)``;
- ``NAME.json``: the architecture record, i.e. how the model differs from the freshly built base
  model (the one its config names): the layers whose type a step changed (a quantized conv, an
  approximate layer), each with the few settings needed to rebuild it, and the shape attributes a
  step changed (channel counts after structured pruning).

Rebuilding takes the base model (built by the caller from the run's config), swaps in the recorded
layers through registered :class:`LayerCodec`\\ s, resizes the recorded attributes and tensors, and
loads the state dict strictly. A layer type without a codec, an attribute outside the allow-list, or a
record that does not fit the state dict is a :class:`CheckpointError`; nothing is imported or executed
from the files.

Steps register a codec for every layer type they put into a model (``register_layer_codec``), next to
the layer's definition.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crosslayer.errors import CrossLayerError
from crosslayer.fileio import atomic_write_json, save_torch

__all__ = ["FORMAT", "MAX_CHECKPOINT_BYTES", "CheckpointError", "LayerCodec", "architecture_record",
           "load_checkpoint", "load_state_dict_file", "portable_record", "rebuild", "register_layer_codec",
           "save_checkpoint", "state_digest"]

FORMAT = 1
MAX_CHECKPOINT_BYTES = 8 << 30
"""The largest state-dict file read (8 GiB)."""
_MAX_RECORD_BYTES = 16 << 20
_MAX_DIM = 1 << 24


def state_digest(model: nn.Module) -> str:
    """A short digest of ``model``'s state (parameter / buffer names and values): equal weights, equal digest."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class CheckpointError(CrossLayerError):
    """A checkpoint that cannot be written or read back safely."""


ChildBuilder = Callable[[str], nn.Module]


@dataclass(frozen=True)
class LayerCodec:
    """How to record and rebuild one layer type a step puts into a model.

    ``encode(module)`` gives JSON-compatible settings; ``decode(settings, original, child)`` builds the
    layer again from the base model's layer it replaced (``original``); a wrapper layer gets its
    recorded children (``children`` names them) through ``child(attr)``.
    """

    key: str
    cls: type[nn.Module]
    encode: Callable[[nn.Module], dict[str, Any]]
    decode: Callable[[dict[str, Any], nn.Module, ChildBuilder], nn.Module]
    children: tuple[str, ...] = ()


_CODECS: dict[str, LayerCodec] = {}

# Shape attributes a step may change (structured pruning), per standard layer type. Only these are ever
# set from a record, and only to non-negative integers (or tuples of them).
_SHAPE_ATTRS: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._NormBase, ("num_features",)),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.GroupNorm, ("num_groups", "num_channels")),
    (nn.MultiheadAttention, ("embed_dim", "kdim", "vdim", "num_heads", "head_dim")),
    (nn.Embedding, ("num_embeddings", "embedding_dim")),
)


def register_layer_codec(codec: LayerCodec) -> LayerCodec:
    """Make ``codec.cls`` recordable in checkpoints under ``codec.key`` (idempotent)."""
    old = _CODECS.get(codec.key)
    if old is not None and old.cls is not codec.cls and old.cls.__qualname__ != codec.cls.__qualname__:
        raise RuntimeError(f"layer codec {codec.key!r} registered twice for different types")
    _CODECS[codec.key] = codec
    return codec


def _codec_for(module: nn.Module) -> LayerCodec | None:
    for c in _CODECS.values():
        if type(module) is c.cls:
            return c
    return None


def _shape_attrs(module: nn.Module) -> tuple[str, ...]:
    return tuple(a for cls, names in _SHAPE_ATTRS if isinstance(module, cls) for a in names)


def _depth(path: str) -> int:
    return path.count(".") + 1 if path else 0


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def _base_path(path: str, aliases: Mapping[str, str]) -> str:
    """The base model's path of the module at ``path`` (inside a wrapper, the wrapped layer's path)."""
    for mp in sorted(aliases, key=len, reverse=True):
        if path == mp or path.startswith(mp + "."):
            return aliases[mp] + path[len(mp):]
    return path


def _type_records(model: nn.Module, base: nn.Module) -> dict[str, dict[str, Any]]:
    """``{path: {"kind", "settings"}}`` for every module whose type differs from the base model's."""
    base_mods = dict(base.named_modules())
    records: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    for path, m in model.named_modules():
        bpath = _base_path(path, aliases)
        b = base_mods.get(bpath)
        if b is not None and type(b) is type(m):
            continue
        codec = _codec_for(m)
        if codec is None:
            what = "is not in the base model" if b is None else f"replaced a {type(b).__name__}"
            raise CheckpointError(f"layer {path or '(root)'!r} is a {type(m).__name__} that {what}, and no "
                                  "checkpoint codec is registered for that type, so it cannot be saved as data")
        records[path] = {"kind": codec.key, "settings": codec.encode(m)}
        aliases.update({f"{path}.{c}" if path else c: bpath for c in codec.children})
    return records


def _codec_named(kind: str) -> LayerCodec | None:
    """The codec registered as ``kind``; the steps register theirs when imported, so a process that has not
    imported them yet (a command reading a run directory) imports the project's own step modules first
    (``crosslayer.stage.discover``: crosslayer's packages only, never code named by the record)."""
    if kind not in _CODECS:
        from crosslayer.stage import discover

        discover()
    return _CODECS.get(kind)


def _decode(path: str, records: Mapping[str, Any], original: nn.Module) -> nn.Module:
    rec = records[path]
    if not isinstance(rec, Mapping) or not isinstance(rec.get("kind"), str):
        raise CheckpointError(f"architecture record of layer {path!r} is malformed")
    codec = _codec_named(rec["kind"])
    if codec is None:
        raise CheckpointError(f"layer {path!r} has unknown kind {rec['kind']!r}; known: "
                              f"{', '.join(sorted(_CODECS)) or '(none)'}")
    settings = rec.get("settings", {})
    if not isinstance(settings, Mapping):
        raise CheckpointError(f"settings of layer {path!r} are malformed")

    def child(attr: str) -> nn.Module:
        sub = f"{path}.{attr}"
        if attr not in codec.children:
            raise CheckpointError(f"{codec.key} has no child {attr!r}")
        return _decode(sub, records, original) if sub in records else original

    try:
        return codec.decode(dict(settings), original, child)
    except CrossLayerError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot rebuild layer {path!r} ({codec.key}) from its record: {exc}") from exc


def _apply_types(base: nn.Module, records: Mapping[str, Any]) -> nn.Module:
    consumed: set[str] = set()
    for path in sorted(records, key=_depth):
        if path in consumed:
            continue
        codec = _codec_named(str(records[path].get("kind", ""))) if isinstance(records[path], Mapping) else None
        if codec is not None:
            consumed.update(f"{path}.{c}" for c in codec.children)
        try:
            original = base.get_submodule(path) if path else base
        except AttributeError as exc:
            raise CheckpointError(f"architecture record names layer {path!r}, which the model does not have") from exc
        new = _decode(path, records, original)
        if not path:
            base = new
        else:
            _set_submodule(base, path, new)
    return base


def _shape_changes(model: nn.Module, skeleton: nn.Module) -> dict[str, dict[str, Any]]:
    ref = dict(skeleton.named_modules())
    out: dict[str, dict[str, Any]] = {}
    for path, m in model.named_modules():
        r = ref.get(path)
        if r is None:
            continue
        diff = {a: _jsonable(getattr(m, a)) for a in _shape_attrs(m)
                if hasattr(m, a) and getattr(m, a) != getattr(r, a, None)}
        if diff:
            out[path] = diff
    return out


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _check_attr_value(path: str, attr: str, v: Any) -> Any:
    def ok(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= _MAX_DIM

    if v is None or ok(v):
        return v
    if isinstance(v, list) and v and all(ok(x) for x in v):
        return tuple(v)
    raise CheckpointError(f"architecture record sets {path}.{attr} to {v!r}; expected a size in [0, {_MAX_DIM}]")


def _apply_shapes(model: nn.Module, changes: Mapping[str, Any]) -> None:
    mods = dict(model.named_modules())
    for path, attrs in changes.items():
        m = mods.get(path)
        if m is None or not isinstance(attrs, Mapping):
            raise CheckpointError(f"architecture record resizes layer {path!r}, which the model does not have")
        allowed = _shape_attrs(m)
        for attr, v in attrs.items():
            if attr not in allowed:
                raise CheckpointError(f"architecture record changes {path}.{attr}; only "
                                      f"{', '.join(allowed) or 'nothing'} may change on a {type(m).__name__}")
            setattr(m, attr, _check_attr_value(path, attr, v))


def _resize_tensors(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Give every parameter / buffer the shape (and dtype) of the state dict's tensor of the same name."""
    for name, t in state.items():
        mod_name, _, attr = name.rpartition(".")
        try:
            owner = model.get_submodule(mod_name) if mod_name else model
        except AttributeError:
            continue  # reported by load_state_dict(strict=True)
        cur = owner._parameters.get(attr) if attr in owner._parameters else owner._buffers.get(attr)
        if cur is None or (cur.shape == t.shape and cur.dtype == t.dtype):
            continue
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(torch.empty_like(t, device=cur.device),
                                                   requires_grad=cur.requires_grad)
        else:
            owner._buffers[attr] = torch.empty_like(t, device=cur.device)


def architecture_record(model: nn.Module, base: nn.Module) -> dict[str, Any]:
    """How ``model`` differs from ``base`` (same config, freshly built): layer types and shape attributes."""
    import copy

    types = _type_records(model, base)
    skeleton = _apply_types(copy.deepcopy(base), types)
    return {"format": FORMAT, "layers": types, "shapes": _shape_changes(model, skeleton)}


def portable_record(model: nn.Module, plain: nn.Module) -> dict[str, Any]:
    """A record that rebuilds ``model`` on *any* freshly built base of its class, with no base at hand: the layer
    types relative to ``plain`` (``model`` with its swapped-in layers turned back into standard ones, e.g. a
    quantized model's float twin) and every allow-listed shape attribute of every layer (not only the changed
    ones). Used by files that travel without their run directory (the packed model file)."""
    shapes = {path: {a: _jsonable(getattr(m, a)) for a in _shape_attrs(m) if hasattr(m, a)}
              for path, m in model.named_modules() if _shape_attrs(m)}
    return {"format": FORMAT, "layers": _type_records(model, plain), "shapes": shapes}


def rebuild(base: nn.Module, record: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """``base`` turned into the recorded architecture, with ``state`` loaded (strictly)."""
    if not isinstance(record, Mapping) or record.get("format") != FORMAT:
        fmt = record.get("format") if isinstance(record, Mapping) else "?"
        raise CheckpointError(f"architecture record has format {fmt!r}; "
                              f"this crosslayer reads format {FORMAT}")
    layers, shapes = record.get("layers", {}), record.get("shapes", {})
    if not isinstance(layers, Mapping) or not isinstance(shapes, Mapping):
        raise CheckpointError("architecture record is malformed (layers / shapes must be tables)")
    model = _apply_types(base, layers)
    _apply_shapes(model, shapes)
    _resize_tensors(model, state)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights do not fit the recorded architecture: {str(exc)[:600]}") from exc
    return model


def save_checkpoint(stem: str | Path, model: nn.Module, base: nn.Module, **meta: Any) -> Path:
    """Write ``stem.pt`` (state dict) and ``stem.json`` (architecture record + ``meta``); checks that the
    pair rebuilds to the same parameter names and shapes before writing."""
    stem = Path(stem)
    import copy

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        record = architecture_record(model, base)
        check = rebuild(copy.deepcopy(base), json.loads(json.dumps(record)), state)
    except CheckpointError:
        raise
    except CrossLayerError as exc:  # a codec refusing its own record: the model cannot be kept, the run goes on
        raise CheckpointError(f"checkpoint {stem.name!r} would not rebuild: {exc}") from exc
    got = {k: tuple(v.shape) for k, v in check.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        raise CheckpointError(f"checkpoint {stem.name!r} would not rebuild to the same model; "
                              f"differs at {sorted(set(got.items()) ^ set(want.items()))[:3]}")
    save_torch(stem.with_suffix(".pt"), state)
    atomic_write_json(stem.with_suffix(".json"), {**record, "meta": meta})
    return stem


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``{name: tensor}`` file read with ``weights_only=True``, size-bounded, every value a tensor."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"cannot read weights {str(p)!r}: {exc.strerror or exc}") from exc
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"weights file {str(p)!r} is {size / 2**30:.1f} GiB, over the "
                              f"{MAX_CHECKPOINT_BYTES >> 30} GiB limit")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: the error says it
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"cannot load weights {str(p)!r} safely: the file holds pickled objects other than "
                              "tensors, which crosslayer never loads (unpickling runs code from the file)") from exc
    except Exception as exc:  # torch raises many types for a corrupt or truncated file
        raise CheckpointError(f"cannot load weights {str(p)!r} safely: {type(exc).__name__}: "
                              f"{str(exc)[:300]}") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise CheckpointError(f"weights file {str(p)!r} does not hold a state dict of tensors")
    return dict(state)


def read_record(path: str | Path) -> dict[str, Any]:
    """An architecture record file (bounded size, JSON)."""
    p = Path(path)
    try:
        if p.stat().st_size > _MAX_RECORD_BYTES:
            raise CheckpointError(f"architecture record {str(p)!r} is too large")
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"cannot read architecture record {str(p)!r}: {exc}") from exc
    if not isinstance(rec, dict):
        raise CheckpointError(f"architecture record {str(p)!r} is not a JSON object")
    return rec


def load_checkpoint(stem: str | Path, base: nn.Module) -> nn.Module:
    """The model saved by :func:`save_checkpoint` at ``stem``, rebuilt on ``base``."""
    stem = Path(stem)
    return rebuild(base, read_record(stem.with_suffix(".json")), load_state_dict_file(stem.with_suffix(".pt")))
