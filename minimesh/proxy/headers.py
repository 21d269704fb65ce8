"""HTTP header lists (lower-case names, order kept, repeated names allowed) and hop-by-hop handling."""

from __future__ import annotations

from collections.abc import Iterator

from minimesh.proxy.config.common import HeaderValueOption

# Hop-by-hop headers (RFC 9110 7.6.1) never cross the proxy; framing is re-done per side.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
                        "trailer", "proxy-authenticate", "proxy-authorization", "content-length", "expect"})


class Headers:
    """An ordered multi-map of header names (lower case) to values."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = items if items is not None else []

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of `name` (several values joined by ","), or `default` when absent."""
        found = None
        for k, v in self._items:
            if k == name:
                found = v if found is None else f"{found},{v}"
        return default if found is None else found

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self._items if k == name]

    def __contains__(self, name: object) -> bool:
        for k, _ in self._items:  # noqa: SIM110  (a plain loop beats any() on the hot path)
            if k == name:
                return True
        return False

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self._items.append((name, value))

    def setdefault(self, name: str, value: str) -> str:
        v = self.get(name)
        if v is None:
            self._items.append((name, value))
            return value
        return v

    def remove(self, name: str) -> None:
        if name in self:
            self._items = [(k, v) for k, v in self._items if k != name]

    def items(self) -> list[tuple[str, str]]:
        return self._items

    def copy(self) -> Headers:
        return Headers(list(self._items))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def without_hop_by_hop(self) -> Headers:
        """A copy without hop-by-hop headers, including those named in `Connection`."""
        named = set()
        for v in self.get_all("connection"):
            named.update(t.strip().lower() for t in v.split(","))
        drop = HOP_BY_HOP | named if named else HOP_BY_HOP
        return Headers([(k, v) for k, v in self._items if k not in drop])

    def apply(self, options: tuple[HeaderValueOption, ...]) -> None:
        """Apply Envoy's `*_headers_to_add` semantics."""
        for o in options:
            if o.append_action == "APPEND_IF_EXISTS_OR_ADD":
                self.add(o.key, o.value)
            elif o.append_action == "ADD_IF_ABSENT":
                if o.key not in self:
                    self.add(o.key, o.value)
            elif o.append_action == "OVERWRITE_IF_EXISTS_OR_ADD" or o.key in self:
                self.set(o.key, o.value)


class RequestHeaderView:
    """What route and filter matchers see: the headers plus the pseudo-headers `:method`, `:path`,
    `:authority` and `:scheme` (HTTP/2 names, as Envoy exposes an HTTP/1.1 request)."""

    __slots__ = ("_headers", "_pseudo")

    def __init__(self, headers: Headers, method: str, path: str, authority: str, scheme: str = "http") -> None:
        self._headers = headers
        self._pseudo = {":method": method, ":path": path, ":authority": authority, ":scheme": scheme}

    def get(self, name: str, default: str | None = None) -> str | None:
        if name.startswith(":"):
            return self._pseudo.get(name, default)
        return self._headers.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._pseudo if isinstance(name, str) and name.startswith(":") else name in self._headers
