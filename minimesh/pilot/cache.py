"""Translate once, serialize once: the push server's resource cache.

`ResourceCache.maker(type_url)` gives the `make` that `translate.py` calls for every resource. The
result is memoized by (builder, args), where the args are the frozen model records, so the same
Service yields the same bytes for every proxy and every push until the Service itself changes. Each
entry holds the resource already encoded as a `DiscoveryResponse.resources` field (tag + length + Any),
so a response is a small header plus a join of cached bytes: per-proxy cost is a list, not protobuf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from envoy.service.discovery.v3 import discovery_pb2

from minimesh.xds import resources as xr

_RESOURCES_TAG = b"\x12"  # DiscoveryResponse field 2 (resources), wire type 2 (length-delimited)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass(frozen=True, slots=True)
class Resource:
    type_url: str
    name: str
    field: bytes  # encoded `resources` entry of a DiscoveryResponse

    @property
    def size(self) -> int:
        return len(self.field)

    def message(self) -> Any:
        """Decode (for /debug/config_dump); the push path never needs this."""
        packed = discovery_pb2.DiscoveryResponse.FromString(self.field).resources[0]
        return xr.unpack(packed, self.type_url)


def encode(type_url: str, data: dict[str, Any]) -> Resource:
    message = xr.from_dict(type_url, data)
    payload = xr.pack(message).SerializeToString()
    return Resource(type_url, xr.resource_name(message), _RESOURCES_TAG + _varint(len(payload)) + payload)


class Generated(NamedTuple):
    """The resources of one type for a group of proxies with the same view, and their encoded fields."""

    resources: tuple[Resource, ...]
    body: bytes  # the concatenated `resources` fields of a DiscoveryResponse

    @classmethod
    def of(cls, resources: Sequence[Resource]) -> Generated:
        return cls(tuple(resources), b"".join(r.field for r in resources))


def encode_response(version: str, type_url: str, nonce: str, body: bytes | Sequence[Resource]) -> bytes:
    """A serialized DiscoveryResponse: the scalar fields by protobuf, the resources by concatenation
    (protobuf parses fields in any order, and concatenated messages merge)."""
    if not isinstance(body, bytes):
        body = b"".join(r.field for r in body)
    head = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce).SerializeToString()
    return head + body


class ResourceCache:
    def __init__(self) -> None:
        self._entries: dict[tuple[Any, ...], tuple[Resource, int]] = {}
        self.generation = 0  # bumped per push; entries unused for two pushes are dropped
        self.hits = 0
        self.misses = 0

    def maker(self, type_url: str) -> Callable[..., Resource]:
        def make(builder: Callable[..., dict[str, Any]], *args: Any) -> Resource:
            key = (builder, *args)
            found = self._entries.get(key)
            if found is not None:
                self.hits += 1
                if found[1] != self.generation:
                    self._entries[key] = (found[0], self.generation)
                return found[0]
            self.misses += 1
            resource = encode(type_url, builder(*args))
            self._entries[key] = (resource, self.generation)
            return resource

        return make

    def next_generation(self) -> None:
        """Start a push; forget what the last two pushes did not use (old revisions of objects)."""
        self.generation += 1
        stale = self.generation - 2
        if len(self._entries) > 256:
            self._entries = {k: v for k, v in self._entries.items() if v[1] >= stale}

    def __len__(self) -> int:
        return len(self._entries)
