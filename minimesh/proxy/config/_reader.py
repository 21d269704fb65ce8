"""Reading an Envoy-shaped dict with errors that name the exact place of the problem.

Every parse function takes a `Node` (the value plus its path, e.g. `listeners[0].filter_chains[1]`) and
raises `ConfigError` on the first problem, so a bad config is rejected before anything is applied.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem; `str(err)` is `<path>: <what is wrong>`."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


_DURATION_RE = re.compile(r"^(\d+)(?:\.(\d{1,9}))?s$")


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


class Node:
    """A mapping being read: every key must be consumed, unknown keys are errors (with a suggestion)."""

    __slots__ = ("_data", "_seen", "path")

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"want an object, got {_kind(data)}")
        self._data: Mapping[str, Any] = data
        self._seen: set[str] = set()
        self.path = path

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self._data

    def value(self) -> dict[str, Any]:
        """A shallow copy of the whole mapping, without consuming any key (for config_dump)."""
        return dict(self._data)

    def raw(self, key: str, default: object = None) -> Any:
        self._seen.add(key)
        return self._data.get(key, default)

    def error(self, message: str, key: str | None = None) -> ConfigError:
        return ConfigError(self.sub(key) if key else self.path, message)

    # typed getters -------------------------------------------------------------------------------
    def str(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        v = self._get(key, required)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self.error(f"want a string, got {_kind(v)}", key)
        return v

    def nonempty_str(self, key: str) -> str:
        v = self.str(key, required=True)
        if not v:
            raise self.error("must not be empty", key)
        return v

    def int(self, key: str, default: int | None = None, *, required: bool = False,
            minimum: int | None = None, maximum: int | None = None) -> Any:
        v = self._get(key, required)
        if v is None:
            return default
        # protobuf JSON allows 64-bit integers as strings ("1024").
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"want an integer, got {_kind(v)}", key)
        if minimum is not None and v < minimum:
            raise self.error(f"must be >= {minimum}, got {v}", key)
        if maximum is not None and v > maximum:
            raise self.error(f"must be <= {maximum}, got {v}", key)
        return v

    def uint32_wrapper(self, key: str, default: int) -> int:
        """A google.protobuf.UInt32Value: either a number or {"value": number}."""
        v = self._data.get(key)
        if isinstance(v, Mapping):
            self._seen.add(key)
            return Node(v, self.sub(key)).done(lambda n: n.int("value", 0, minimum=0))
        return self.int(key, default, minimum=0)

    def bool(self, key: str, default: bool = False) -> bool:
        v = self._get(key, False)
        if v is None:
            return default
        if isinstance(v, Mapping) and set(v) == {"value"}:  # google.protobuf.BoolValue
            v = v["value"]
        if not isinstance(v, bool):
            raise self.error(f"want true or false, got {_kind(v)}", key)
        return v

    def duration(self, key: str, default: float | None = None) -> Any:
        """An Envoy duration ("0.25s", "15s", or {seconds, nanos}) in seconds."""
        v = self._get(key, False)
        if v is None:
            return default
        return parse_duration(v, self.sub(key))

    def enum(self, key: str, choices: tuple[str, ...], default: str) -> str:
        v = self.str(key, default)
        if v not in choices:
            raise self.error(f"unknown value {v!r}, want one of {', '.join(choices)}", key)
        return v

    def list(self, key: str, *, required: bool = False) -> list[Any]:
        v = self._get(key, required)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.error(f"want a list, got {_kind(v)}", key)
        return v

    def str_list(self, key: str) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(self.list(key)):
            if not isinstance(item, str):
                raise ConfigError(f"{self.sub(key)}[{i}]", f"want a string, got {_kind(item)}")
            out.append(item)
        return tuple(out)

    def items(self, key: str, parse: Callable[[Node], T], *, required: bool = False) -> tuple[T, ...]:
        """Parse each element of a list of objects, with `key[i]` in error paths."""
        return tuple(parse(Node(item, f"{self.sub(key)}[{i}]"))
                     for i, item in enumerate(self.list(key, required=required)))

    def obj(self, key: str, parse: Callable[[Node], T], *, required: bool = False) -> T | None:
        v = self._get(key, required)
        if v is None:
            return None
        node = Node(v, self.sub(key))
        return node.done(parse)

    def mapping(self, key: str) -> dict[str, Any]:
        v = self._get(key, False)
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise self.error(f"want an object, got {_kind(v)}", key)
        return dict(v)

    def one_of(self, *keys: str, required: bool = True) -> str | None:
        """Exactly one (or, when not required, at most one) of `keys` is set; returns which."""
        present = [k for k in keys if self._data.get(k) is not None]
        if len(present) > 1:
            raise self.error(f"set only one of {', '.join(keys)} (got {', '.join(present)})")
        if not present:
            if required:
                raise self.error(f"set one of {', '.join(keys)}")
            return None
        return present[0]

    # bookkeeping ---------------------------------------------------------------------------------
    def _get(self, key: str, required: bool) -> Any:
        self._seen.add(key)
        v = self._data.get(key)
        if v is None and required:
            raise self.error("required field is missing", key)
        return v

    def ignore(self, *keys: str) -> None:
        self._seen.update(keys)

    def finish(self) -> None:
        for key in self._data:
            if key not in self._seen:
                hint = difflib.get_close_matches(key, list(self._seen), n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.error(f"unknown field {key!r}{more}", key)

    def done(self, parse: Callable[[Node], T]) -> T:
        result = parse(self)
        self.finish()
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)


def parse_duration(v: object, path: str) -> float:
    if isinstance(v, Mapping):
        node = Node(v, path)
        secs = node.int("seconds", 0, minimum=0)
        nanos = node.int("nanos", 0, minimum=0, maximum=999_999_999)
        node.finish()
        return secs + nanos / 1e9
    if isinstance(v, str):
        m = _DURATION_RE.match(v.strip())
        if m:
            return int(m.group(1)) + (int(m.group(2).ljust(9, "0")) / 1e9 if m.group(2) else 0.0)
    raise ConfigError(path, f'bad duration {v!r}, want a string like "0.25s" or "15s"')


def format_duration(seconds: float) -> str:
    """Envoy's JSON form: "15s", "0.250s"."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    """to_dict helper: omit None, empty lists/dicts (Envoy's config_dump omits defaults too)."""
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {} and v != () and v != ""}
