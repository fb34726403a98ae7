"""TOML into frozen, keyword-only dataclass configs. Validation raises ``ConfigError`` naming the
key and what is allowed; it never asserts.

A technique declares its config as ``@dataclass(frozen=True, kw_only=True)`` subclassing
:class:`Config` and may add a ``validate(self)`` method that raises ``ConfigError``. ``Config`` checks
every number when the object is constructed (from TOML, the CLI or Python alike): floats must be
finite, integers of a sane magnitude, then ``validate`` runs. :func:`from_mapping` checks unknown keys
and types (int, float, bool, str, Literal choices, tuples/lists of those, optional values, nested
configs) first.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomllib

from crosslayer.errors import ConfigError

__all__ = ["MAX_BATCH", "MAX_CONFIG_BYTES", "MAX_EPOCHS", "MAX_INT", "MAX_TILE", "Config", "check_finite",
           "check_range", "from_mapping", "load_toml", "parse_toml", "to_mapping"]

T = TypeVar("T")

MAX_CONFIG_BYTES = 4 << 20
"""The largest TOML file read (4 MiB): a config is a page of text, so anything larger is refused unread."""
MAX_INT = 1 << 53
"""The largest integer magnitude any option accepts; options with a natural bound check a tighter one."""
MAX_BATCH = 1 << 16
"""The largest batch size any option accepts (65,536 images)."""
MAX_EPOCHS = 10_000
"""The most training epochs any option accepts."""
MAX_NESTING = 16
"""The deepest nesting of tables and arrays a config may use."""
MAX_TILE = 4096
"""The largest detector tile (px) ``detect`` accepts, checked before a detector or a frame is built."""


class Config:
    """Base of every config dataclass: every number is checked when the object is built.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)``; a ``validate(self)`` method, if defined,
    runs after the generic checks (floats finite, integers within :data:`MAX_INT`, nested configs valid).
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check_finite(f.name, getattr(self, f.name))
        validate = getattr(self, "validate", None)
        if callable(validate):
            validate()


def check_finite(name: str, value: Any) -> None:
    """Raise ``ConfigError`` if ``value`` (or an item of a list / tuple / dict value) is a NaN, an
    infinity, or a number beyond :data:`MAX_INT` in magnitude."""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} = {value!r} is not a finite number")
    if isinstance(value, float) and abs(value) > MAX_INT:
        raise ConfigError(f"{name} = {value:.3g} is absurdly large (more than 2**53 in magnitude)")
    if isinstance(value, int) and abs(value) > MAX_INT:
        digits = str(value)
        shown = digits if len(digits) <= 24 else f"{digits[:12]}...({len(digits)} digits)"
        raise ConfigError(f"{name} = {shown} is absurdly large (more than 2**53 in magnitude)")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(f"{name}[{i}]", v)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            check_finite(f"{name}.{k}", v)


def load_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a TOML file, turning a missing, oversized, binary or malformed file into a ``ConfigError``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist or is not a file")
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(p)!r}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {str(p)!r} is larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is text")
    return parse_toml(raw, f"{what} {str(p)!r}")


def parse_toml(raw: bytes, where: str = "config") -> dict[str, Any]:
    """Parse TOML bytes: not UTF-8, a syntax error or nesting deeper than :data:`MAX_NESTING` is a
    ``ConfigError``; numbers are checked by :func:`check_finite` when configs are built from it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start}); a config must be a TOML text file") from exc
    if "\x00" in text:
        raise ConfigError(f"{where} contains NUL bytes; a config must be a TOML text file")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{where} nests tables or arrays too deeply") from exc
    _check_depth(doc, where)
    return doc


def _check_depth(doc: Any, where: str) -> None:
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ConfigError(f"{where} nests tables or arrays more than {MAX_NESTING} levels deep")
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, *, section: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, checking keys and types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = dict(data or {})
    # a nested config's section arrives as its parent's field name, e.g. "[imc] crossbar": name its keys
    # "[imc] crossbar.rows"
    where = (f"{section}." if "] " in section else f"[{section}] ") if section else ""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}unknown option(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(fields)) or '(none)'}"
        )
    kwargs = {name: _coerce(value, hints[name], f"{where}{name}") for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}{exc}") from exc
    except ConfigError as exc:
        msg = str(exc)
        named = not where or msg.startswith(where) or msg.startswith(f"{section}.")
        raise ConfigError(msg if named else f"{where}{msg}") from None
    if not isinstance(obj, Config):  # a plain dataclass: run its checks here
        for f in dataclasses.fields(obj):
            check_finite(f"{where}{f.name}", getattr(obj, f.name))
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    return obj


def to_mapping(obj: Any) -> dict[str, Any]:
    """A dataclass config as plain TOML/JSON-friendly values (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = to_mapping(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ``ConfigError`` unless ``lo <= value <= hi`` (bounds optional, open or closed); NaN and
    infinities are always out of range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} = {value!r} is not a finite number")
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{name} = {value!r} is out of range; allowed {left}{lo_s}, {hi_s}{right}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name} = {value!r} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{name} = {value!r} has the wrong type")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{name} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a table, got {value!r}")
        if args:
            return {str(k): _coerce(v, args[1], f"{name}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        check_finite(name, value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        check_finite(name, value)
        try:
            out = float(value)
        except OverflowError as exc:
            raise ConfigError(f"{name} is too large for a number") from exc
        check_finite(name, out)
        return out
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a table, got {value!r}")
        return from_mapping(tp, value, section=name)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}")
    return value
