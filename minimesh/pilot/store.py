"""The mutable registry the watches feed; it says what each change means for the proxies.

`apply()` takes one watch event, `replace()` a full (re)list; both return a PushRequest describing the
change, or None when nothing a proxy can see changed (status updates, a resourceVersion bump). An object
that cannot be understood is reported in `errors` and otherwise ignored: one bad object must not stop
every other proxy's config. `snapshot()` freezes the current state into a PushContext.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from minimesh.authz.model import KIND as AUTHORIZATION_POLICY
from minimesh.pilot import convert
from minimesh.pilot.context import PushContext
from minimesh.pilot.push import PushRequest

log = logging.getLogger(__name__)

SERVICE = "Service"
ENDPOINT_SLICE = "EndpointSlice"
POD = "Pod"
NAMESPACE = "Namespace"
SIDECAR = "Sidecar"
# Mesh resources kept as specs for later stages.
CONFIG_KINDS = ("VirtualService", "DestinationRule", "Gateway", "PeerAuthentication", "AuthorizationPolicy")
KINDS = (SERVICE, ENDPOINT_SLICE, POD, NAMESPACE, SIDECAR, *CONFIG_KINDS)
# pilot_push_triggers{type}: Istio's trigger names.
TRIGGER = {SERVICE: "service", ENDPOINT_SLICE: "endpoint", POD: "proxy", NAMESPACE: "namespace", SIDECAR: "config",
           **{k: "config" for k in CONFIG_KINDS}}


def _warn_invalid_policy(record: Any) -> None:
    """An AuthorizationPolicy is kept even when it cannot be parsed: it must fail closed, not vanish."""
    from minimesh.authz import translate

    found = translate.parse(record.namespace, record.name, record.spec)
    if isinstance(found, translate.Invalid):
        log.warning("pilot: %s fails closed (%s): %s", found.key,
                    "denies everything it selects" if found.action in ("DENY", "CUSTOM") else "allows nothing",
                    found.error)


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


class MeshStore:
    def __init__(self, domain: str = "cluster.local", clock: Callable[[], float] | None = None) -> None:
        import time

        self.domain = domain
        self._clock = clock or time.monotonic
        self.objects: dict[str, dict[str, Any]] = {k: {} for k in KINDS}  # kind -> key -> record
        self.errors: dict[tuple[str, str], str] = {}  # (kind, key) -> why it was ignored

    # ---- changes -----------------------------------------------------------------------------

    def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> PushRequest | None:
        """One watch event: ADDED, MODIFIED or DELETED (BOOKMARK and the like are ignored)."""
        if kind not in self.objects:
            raise ValueError(f"unknown kind {kind!r}; want one of {', '.join(KINDS)}")
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            return None
        key = _key(obj)
        old = self.objects[kind].get(key)
        if event_type == "DELETED":
            new = None
        else:
            try:
                new = self._convert(kind, obj)
            except (convert.ConvertError, ValueError, TypeError, KeyError, AttributeError) as e:
                self.errors[(kind, key)] = str(e)
                log.warning("pilot: ignoring %s %s: %s", kind, key, e)
                return None
        self.errors.pop((kind, key), None)
        if new == old:
            return None
        if kind == AUTHORIZATION_POLICY and new is not None:
            _warn_invalid_policy(new)
        if new is None:
            self.objects[kind].pop(key, None)
        else:
            self.objects[kind][key] = new
        return self._request(kind, [(old, new)])

    def replace(self, kind: str, objs: Iterable[Mapping[str, Any]]) -> PushRequest | None:
        """A fresh list of every object of `kind` (initial sync, or relist after a watch expired)."""
        seen: set[str] = set()
        changes = []
        for obj in objs:
            seen.add(_key(obj))
            old = self.objects[kind].get(_key(obj))
            req = self.apply(kind, "ADDED", obj)
            if req is not None:
                changes.append((old, self.objects[kind].get(_key(obj))))
        for key in [k for k in self.objects[kind] if k not in seen]:
            changes.append((self.objects[kind].pop(key), None))
        return self._request(kind, changes) if changes else None

    # ---- snapshot ----------------------------------------------------------------------------

    def snapshot(self, version: str) -> PushContext:
        slices: dict[str, list[Any]] = {}
        for s in self.objects[ENDPOINT_SLICE].values():
            if s.service:
                slices.setdefault(f"{s.namespace}/{s.service}", []).append(s)
        return PushContext(
            version=version,
            services=tuple(sorted(self.objects[SERVICE].values(), key=lambda s: s.hostname)),
            slices={k: tuple(sorted(v, key=lambda s: s.name)) for k, v in slices.items()},
            pods={(p.namespace, p.name): p for p in self.objects[POD].values()},
            namespaces=frozenset(self.objects[NAMESPACE]),
            sidecars=tuple(self.objects[SIDECAR].values()),
            configs={k: tuple(self.objects[k].values()) for k in CONFIG_KINDS},
        )

    # ---- internals ---------------------------------------------------------------------------

    def _convert(self, kind: str, obj: Mapping[str, Any]) -> Any:
        if kind == SERVICE:
            return convert.service(obj, self.domain)
        if kind == ENDPOINT_SLICE:
            return convert.endpoint_slice(obj)
        if kind == POD:
            return convert.pod(obj)
        if kind == NAMESPACE:
            name = (obj.get("metadata") or {}).get("name")
            if not name:
                raise convert.ConvertError("Namespace without metadata.name")
            return convert.labels_of((obj.get("metadata") or {}).get("labels"))
        if kind == SIDECAR:
            return convert.sidecar(obj)
        return convert.config(kind, obj)

    def _request(self, kind: str, changes: list[tuple[Any, Any]]) -> PushRequest:
        reasons = Counter({TRIGGER[kind]: len(changes)})
        now = self._clock()
        if kind == ENDPOINT_SLICE:
            services = {f"{r.namespace}/{r.service}" for pair in changes for r in pair if r is not None and r.service}
            return PushRequest(full=False, services=frozenset(services), reasons=reasons, start=now)
        if kind == SERVICE:
            services = {r.key for pair in changes for r in pair if r is not None}
            return PushRequest(full=True, services=frozenset(services), reasons=reasons, start=now)
        if kind == POD:
            namespaces = {r.namespace for pair in changes for r in pair if r is not None}
            return PushRequest(full=True, namespaces=frozenset(namespaces), reasons=reasons, start=now)
        return PushRequest(full=True, everything=True, reasons=reasons, start=now)
