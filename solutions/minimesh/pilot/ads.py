"""What a DiscoveryRequest means for the push server: the ACK/NACK bookkeeping of one stream (pure).

On an ADS stream the proxy sends a DiscoveryRequest per type when it subscribes, and one after every
response: an ACK (`response_nonce` = that response's nonce, `version_info` = its version) or a NACK (the
same nonce, the *previous* good `version_info`, and `error_detail`). Requests can cross responses in
flight, so a request carrying the nonce of an older response says nothing about the newest one: it
is stale and ignored. And a request may change `resource_names` (EDS after new clusters, RDS after
new listeners): then the server must answer with the newly requested resources.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2


class Decision(enum.Enum):
    NEW = "new subscription"  # first request of this type on the stream: respond
    RESUBSCRIBE = "resource names changed"  # an ACK that asks for other resources: respond
    ACK = "ack"  # the proxy applied our last response: record, no response
    NACK = "nack"  # the proxy rejected our last response: record the error, no response
    STALE = "stale nonce"  # about a response that is not our latest: ignore

    @property
    def respond(self) -> bool:
        return self in (Decision.NEW, Decision.RESUBSCRIBE)


@dataclass
class WatchedResource:
    """One type on one connection: what the proxy asked for, what we sent, what it accepted."""

    type_url: str
    names: tuple[str, ...]  # resource_names of the latest accepted request (empty: all, for CDS/LDS)
    nonce_sent: str = ""
    version_sent: str = ""
    nonce_acked: str = ""
    version_acked: str = ""
    last_error: str | None = None  # error_detail.message of the latest NACK, cleared by an ACK
    nacks: int = 0


def classify(request: discovery_pb2.DiscoveryRequest, watched: WatchedResource | None) -> Decision:
    """Decide what `request` is, given what this connection knows about its type (None: nothing yet).

    Istio's order (pilot/pkg/xds/ads.go, shouldRespond): a type never seen on this connection is a new
    subscription (even with a nonce: the proxy reconnected from another server); a nonce other than the
    last one we sent is stale; then an `error_detail` makes it a NACK; otherwise it is an ACK, and an
    ACK whose resource_names differ from the watched ones (order does not matter) is a resubscription.
    """
    # BEGIN SOLUTION lab-04
    # TODO: return Decision.NEW when watched is None; STALE when request.response_nonce differs
    #   from watched.nonce_sent; NACK when the request has an error_detail (request.HasField);
    #   RESUBSCRIBE when set(request.resource_names) differs from set(watched.names); else ACK.
    if watched is None:
        return Decision.NEW
    if request.response_nonce != watched.nonce_sent:
        return Decision.STALE
    if request.HasField("error_detail"):
        return Decision.NACK
    if set(request.resource_names) != set(watched.names):
        return Decision.RESUBSCRIBE
    return Decision.ACK
    # END SOLUTION


def record(watched: WatchedResource, request: discovery_pb2.DiscoveryRequest, decision: Decision) -> None:
    """Update the bookkeeping after `classify` (given code; `/debug/syncz` shows the result)."""
    if decision is Decision.NACK:
        watched.last_error = request.error_detail.message or f"code {request.error_detail.code}"
        watched.nacks += 1
    elif decision in (Decision.ACK, Decision.RESUBSCRIBE):
        watched.nonce_acked = request.response_nonce
        watched.version_acked = request.version_info
        watched.last_error = None
        watched.names = tuple(request.resource_names)
