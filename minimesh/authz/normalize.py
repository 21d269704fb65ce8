"""Request normalisation before authorization, as Istio documents it ("Authorization Policy Normalization").

The normalised path is what policies see, and what the proxy should forward, so that `/details/../admin`
cannot slip past a rule written for `/admin`. Modes are Istio's `meshConfig.pathNormalization`:

- NONE: nothing (the query is still ignored when matching paths).
- BASE (Istio's default): decode `%HH` of unreserved characters (letters, digits, `-`, `.`, `_`, `~`)
  once, turn `\\` into `/`, resolve `.` and `..` segments (RFC 3986 5.2.4; `..` never climbs above `/`).
- MERGE_SLASHES: BASE, then `//` -> `/`.
- DECODE_AND_MERGE_SLASHES: also decode `%2F` and `%5C` (before BASE), then merge slashes.

Always: `%00` is rejected (HTTP 400), the query (`?...`) and fragment are not part of the path, and a
method that is not upper case is rejected (400), as Istio does.
"""

from __future__ import annotations

import re
from typing import Literal

Mode = Literal["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]
MODES: tuple[Mode, ...] = ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")

_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SLASHES = re.compile(r"/{2,}")


class InvalidRequest(ValueError):
    """A request Istio rejects with 400 before authorization."""


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path."""
    out: list[str] = []
    segments = path.split("/")[1:]  # path starts with "/"
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def normalize_path(raw: str, mode: Mode = "BASE") -> str:
    """The path authorization policies are matched against (raises InvalidRequest for a 400)."""
    if mode not in MODES:
        raise ValueError(f"path normalization {mode!r}: want one of {', '.join(MODES)}")
    if "%00" in raw:
        raise InvalidRequest(f"path {raw!r} contains %00")
    path = re.split(r"[?#]", raw, maxsplit=1)[0]
    if mode == "NONE":
        return path
    decode = set(_UNRESERVED)
    if mode == "DECODE_AND_MERGE_SLASHES":
        decode |= {"/", "\\"}

    def one(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in decode else m.group(0)

    path = _PERCENT.sub(one, path).replace("\\", "/")  # one pass: never decodes twice
    if not path.startswith("/"):
        raise InvalidRequest(f"path {raw!r} does not start with '/'")
    path = remove_dot_segments(path)
    if mode in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        path = _SLASHES.sub("/", path)
    return path


def normalize_target(target: str, mode: Mode = "BASE") -> str:
    """A request target with its path normalised and its query kept (what the proxy routes and forwards)."""
    path, sep, query = target.partition("?")
    return normalize_path(path, mode) + sep + query


def check_method(method: str) -> str:
    if not method or method != method.upper():
        raise InvalidRequest(f"method {method!r} is not upper case")
    return method
