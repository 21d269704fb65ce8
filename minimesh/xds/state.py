"""The client side of ADS (state of the world) as a pure state machine, no I/O (in the spirit of h11).

The I/O around it (`client.py`) feeds it what arrives and sends what it returns:

    requests = state.connected()             # on every (re)connect: re-subscribe with last-ACKed versions
    update = state.receive(response)         # decode + merge; raises ResponseError for a bad response
    requests = state.accept(update)          # the proxy applied it: ACK (+ new EDS/RDS subscriptions)
    requests = state.reject(type_url, nonce, error)   # it did not: NACK, keep the last good config

Protocol rules (Envoy's "xDS REST and gRPC protocol"): an ACK repeats the response's `version_info` and
`nonce`; a NACK carries the previous good `version_info`, the response's nonce and `error_detail`. CDS
and LDS responses carry the complete set; EDS and RDS responses carry some of the subscribed resources,
so they are merged into what we have. Subscriptions follow the config: EDS for the EDS clusters that
CDS delivered, RDS for the route configurations the listeners name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from minimesh.xds import resources as xr
from minimesh.xds.framing import StatusCode

DiscoveryRequest = discovery_pb2.DiscoveryRequest
DiscoveryResponse = discovery_pb2.DiscoveryResponse

# Which type's content decides the subscription of which other type.
_DEPENDENT = {xr.CLUSTER_TYPE: xr.ENDPOINT_TYPE, xr.LISTENER_TYPE: xr.ROUTE_TYPE}


class ResponseError(ValueError):
    """A response the client cannot use at all (undecodable, duplicate names, unknown type)."""


@dataclass
class Subscription:
    """What we asked for of one type and what we accepted."""

    type_url: str
    names: tuple[str, ...] | None  # None: wildcard (all of them; CDS and LDS)
    acked_version: str = ""  # version_info of the last accepted response ("" before the first)
    nonce: str = ""  # nonce of the last response seen on the current stream
    resources: dict[str, Message] = field(default_factory=dict)  # accepted: name -> message
    last_error: str | None = None  # error text of the last NACK, cleared by the next ACK
    responses: int = 0
    nacks: int = 0


@dataclass(frozen=True)
class Update:
    """A response turned into the complete candidate state of its type (not applied yet)."""

    type_url: str
    version: str
    nonce: str
    resources: tuple[Message, ...]  # every resource of the type the proxy would have after applying
    names: tuple[str, ...] = ()  # their names, in the same order


class AdsState:
    def __init__(self, node: base_pb2.Node, initial: Iterable[str] = (xr.CLUSTER_TYPE, xr.LISTENER_TYPE)) -> None:
        self.node = node
        self.subscriptions: dict[str, Subscription] = {
            t: Subscription(t, None if t in xr.WILDCARD_TYPES else ()) for t in initial
        }
        self._node_sent = False

    # ---- stream lifecycle --------------------------------------------------------------------

    def connected(self) -> list[DiscoveryRequest]:
        """Requests that open a stream: every subscription, with the versions we hold (not the nonces:
        nonces belong to a stream, and this is a new one)."""
        self._node_sent = False
        out = []
        for type_url in self._ordered():
            sub = self.subscriptions[type_url]
            sub.nonce = ""
            out.append(self._request(sub, version=sub.acked_version))
        return out

    def receive(self, response: DiscoveryResponse) -> Update:
        type_url = response.type_url
        sub = self.subscriptions.get(type_url)
        if sub is None:
            raise ResponseError(f"response for {type_url!r}, which this client never subscribed to")
        sub.responses += 1
        short = xr.short_name(type_url)
        cls = xr.message_class(type_url)
        name_field = "cluster_name" if type_url == xr.ENDPOINT_TYPE else "name"
        decoded: dict[str, Message] = {}
        for i, packed in enumerate(response.resources):
            if packed.type_url != type_url:
                raise ResponseError(f"resources[{i}]: a {packed.type_url!r} in a response for {type_url!r}")
            try:
                message = cls.FromString(packed.value)
            except DecodeError as e:
                raise ResponseError(f"resources[{i}]: {short} resource: cannot decode: {e}") from None
            name = getattr(message, name_field)
            if not name:
                raise ResponseError(f"resources[{i}]: {short} resource without a name")
            if name in decoded:
                raise ResponseError(f"resources[{i}]: duplicate {short} resource {name!r}")
            decoded[name] = message
        if sub.names is None:
            candidate = decoded  # wildcard: the response is the whole set
        else:
            # Merge into what we hold; resources we did not ask for are ignored, as Envoy does.
            candidate = dict(sub.resources)
            wanted = set(sub.names)
            candidate.update((n, m) for n, m in decoded.items() if n in wanted)
        return Update(type_url, response.version_info, response.nonce, tuple(candidate.values()),
                      tuple(candidate))

    def accept(self, update: Update) -> list[DiscoveryRequest]:
        """The update is applied: remember it, ACK it, and follow subscriptions it implies."""
        sub = self.subscriptions[update.type_url]
        sub.acked_version = update.version
        sub.nonce = update.nonce
        sub.resources = dict(zip(update.names, update.resources, strict=True))
        sub.last_error = None
        out = [self._request(sub, version=update.version)]
        follow = self._follow(update)
        if follow is not None:
            out.append(follow)
        return out

    def reject(self, type_url: str, nonce: str, error: str) -> list[DiscoveryRequest]:
        """NACK: the previous good version, this nonce and the error; the accepted state is unchanged."""
        sub = self.subscriptions.get(type_url)
        if sub is None:
            sub = Subscription(type_url, ())  # NACK a type we never asked for, without subscribing to it
        else:
            sub.nonce = nonce
            sub.last_error = error
            sub.nacks += 1
        req = self._request(sub, version=sub.acked_version, nonce=nonce)
        req.error_detail.CopyFrom(status_pb2.Status(code=int(StatusCode.INVALID_ARGUMENT), message=error))
        return [req]

    # ---- queries -----------------------------------------------------------------------------

    def acked_version(self, type_url: str) -> str:
        sub = self.subscriptions.get(type_url)
        return sub.acked_version if sub else ""

    def accepted(self, type_url: str) -> list[Message]:
        sub = self.subscriptions.get(type_url)
        return list(sub.resources.values()) if sub else []

    # ---- internals ---------------------------------------------------------------------------

    def _follow(self, update: Update) -> DiscoveryRequest | None:
        """After CDS: subscribe EDS to the EDS clusters' names; after LDS: RDS to the listeners' routes."""
        dependent = _DEPENDENT.get(update.type_url)
        if dependent is None:
            return None
        wanted: list[str] = []
        for m in update.resources:
            found = [xr.eds_service_name(m)] if dependent == xr.ENDPOINT_TYPE else xr.rds_route_names(m)  # type: ignore[arg-type]
            wanted.extend(n for n in found if n and n not in wanted)
        names = tuple(sorted(wanted))
        sub = self.subscriptions.get(dependent)
        if sub is None:
            if not names:
                return None
            sub = self.subscriptions[dependent] = Subscription(dependent, names)
            return self._request(sub, version="")
        if sub.names == names:
            return None
        sub.names = names
        sub.resources = {n: m for n, m in sub.resources.items() if n in set(names)}
        return self._request(sub, version=sub.acked_version)

    def _request(self, sub: Subscription, *, version: str, nonce: str | None = None) -> DiscoveryRequest:
        req = DiscoveryRequest(
            version_info=version,
            type_url=sub.type_url,
            response_nonce=sub.nonce if nonce is None else nonce,
            resource_names=list(sub.names or ()),
        )
        if not self._node_sent:  # the node goes in the first request of a stream only
            req.node.CopyFrom(self.node)
            self._node_sent = True
        return req

    def _ordered(self) -> list[str]:
        return [t for t in xr.PUSH_ORDER if t in self.subscriptions] + [
            t for t in self.subscriptions if t not in xr.PUSH_ORDER
        ]
