"""The server's ACK/NACK decision (pure): new subscription, ACK, NACK, stale nonce, resubscription."""

from __future__ import annotations

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from minimesh.pilot.ads import Decision, WatchedResource, classify, record
from minimesh.xds import resources as xr


def req(nonce: str = "", version: str = "", names: tuple[str, ...] = (), error: str | None = None):
    r = discovery_pb2.DiscoveryRequest(type_url=xr.ENDPOINT_TYPE, response_nonce=nonce, version_info=version,
                                       resource_names=list(names))
    if error is not None:
        r.error_detail.message = error
    return r


def watched(nonce: str = "n2", names: tuple[str, ...] = ("a", "b")) -> WatchedResource:
    return WatchedResource(xr.ENDPOINT_TYPE, names, nonce_sent=nonce, version_sent="v2", nonce_acked="n1",
                           version_acked="v1")


@pytest.mark.parametrize("request_, state, want", [
    (req(names=("a",)), None, Decision.NEW),
    (req(nonce="from-another-server", version="v9"), None, Decision.NEW),  # reconnect: still new here
    (req(nonce="n2", version="v2", names=("b", "a")), watched(), Decision.ACK),  # order does not matter
    (req(nonce="n2", version="v1", names=("a", "b"), error="bad"), watched(), Decision.NACK),
    (req(nonce="n1", version="v1", names=("a", "b")), watched(), Decision.STALE),
    (req(nonce="n1", version="v1", error="old news"), watched(), Decision.STALE),  # a NACK of an old response
    (req(nonce="", names=("a", "b")), watched(), Decision.STALE),
    (req(nonce="n2", version="v2", names=("a", "b", "c")), watched(), Decision.RESUBSCRIBE),
    (req(nonce="", names=("x",)), watched(nonce=""), Decision.RESUBSCRIBE),  # nothing sent yet
])
def test_classify(request_, state, want: Decision) -> None:
    assert classify(request_, state) is want


def test_only_new_and_resubscribe_get_a_response() -> None:
    assert {d for d in Decision if d.respond} == {Decision.NEW, Decision.RESUBSCRIBE}


def test_record_keeps_the_last_good_version_on_nack_and_clears_the_error_on_ack() -> None:
    w = watched()
    record(w, req(nonce="n2", version="v1", names=("a", "b"), error="cluster b: bad"), Decision.NACK)
    assert (w.version_acked, w.last_error, w.nacks) == ("v1", "cluster b: bad", 1)
    record(w, req(nonce="n2", version="v2", names=("a",)), Decision.RESUBSCRIBE)
    assert (w.version_acked, w.nonce_acked, w.last_error, w.names) == ("v2", "n2", None, ("a",))
