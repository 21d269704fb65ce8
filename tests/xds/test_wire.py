"""gRPC framing, back-off, node ids and resource names (pure parts of minimesh.xds)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minimesh.xds import resources as xr
from minimesh.xds.backoff import Backoff
from minimesh.xds.framing import GrpcError, MessageDecoder, StatusCode, encode_message, status_from_headers
from minimesh.xds.node import NodeIdError, node_dict, parse_node_id, sidecar_node_id


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_decoder_reassembles_messages_however_the_bytes_are_split(messages: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_message(m) for m in messages)
    decoder, got, pos, i = MessageDecoder(), [], 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        got += decoder.feed(wire[pos:pos + step])
        pos, i = pos + step, i + 1
    assert got == messages and decoder.pending == 0


def test_decoder_refuses_compressed_and_oversized_messages() -> None:
    with pytest.raises(GrpcError, match="compressed gRPC message"):
        MessageDecoder().feed(b"\x01\x00\x00\x00\x01x")
    with pytest.raises(GrpcError, match="exceeds limit 10") as e:
        MessageDecoder(max_message=10).feed(encode_message(b"x" * 11))
    assert e.value.code == StatusCode.RESOURCE_EXHAUSTED


def test_status_trailers() -> None:
    assert status_from_headers({}) is None
    err = status_from_headers({"grpc-status": "3", "grpc-message": "bad%20node"})
    assert err is not None and err.code == StatusCode.INVALID_ARGUMENT and err.message == "bad node"
    assert "INVALID_ARGUMENT: bad node" in str(err)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    b = Backoff(0.5, 4.0, random.Random(7))
    delays = [b.next_delay() for _ in range(12)]
    ceilings = [min(4.0, 0.5 * 2**n) for n in range(12)]
    assert all(0 <= d < c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() < 0.5
    with pytest.raises(ValueError, match="base"):
        Backoff(0, 1)


def test_node_ids_round_trip_and_bad_ones_say_what_is_wrong() -> None:
    nid = sidecar_node_id("10.244.0.5", "details-v1-abc", "default")
    assert nid == "sidecar~10.244.0.5~details-v1-abc.default~default.svc.cluster.local"
    parsed = parse_node_id(nid)
    assert (parsed.type, parsed.ip, parsed.pod, parsed.namespace, parsed.domain) == (
        "sidecar", "10.244.0.5", "details-v1-abc", "default", "cluster.local")
    assert str(parsed) == nid
    for bad, why in [("sidecar~10.0.0.1~pod", "want 4 parts"), ("proxy~10.0.0.1~p.ns~ns.svc.cluster.local", "type 'proxy'"),
                     ("sidecar~nope~p.ns~ns.svc.cluster.local", "not an IP address"),
                     ("sidecar~10.0.0.1~pod~ns.svc.cluster.local", "is not pod.namespace"),
                     ("sidecar~10.0.0.1~p.ns~other.svc.cluster.local", "not ns.svc.<domain>")]:
        with pytest.raises(NodeIdError, match=why):
            parse_node_id(bad)
    node = node_dict("10.0.0.1", "reviews-v2-x", "default", labels={"app": "reviews"}, workload="reviews-v2")
    assert node["cluster"] == "reviews-v2.default" and node["metadata"]["LABELS"] == {"app": "reviews"}


def test_istio_names() -> None:
    host = xr.service_hostname("details", "default")
    assert xr.outbound_cluster_name(9080, host) == "outbound|9080||details.default.svc.cluster.local"
    assert xr.outbound_cluster_name(9080, host, "v1") == "outbound|9080|v1|details.default.svc.cluster.local"
    assert xr.parse_cluster_name("outbound|9080|v1|details.default.svc.cluster.local") == (
        "outbound", 9080, "v1", "details.default.svc.cluster.local")
    assert xr.inbound_cluster_name(9080) == "inbound|9080||"
    assert xr.listener_name("0.0.0.0", 9080) == "0.0.0.0_9080" and xr.route_config_name(9080) == "9080"
    with pytest.raises(xr.ResourceError, match="not an Istio cluster name"):
        xr.parse_cluster_name("PassthroughCluster")


def test_dicts_round_trip_through_the_real_envoy_messages() -> None:
    cluster = {"name": "c", "type": "EDS", "connect_timeout": "10s", "eds_cluster_config": {"service_name": "c"}}
    message = xr.from_dict(xr.CLUSTER_TYPE, cluster)
    assert xr.unpack(xr.pack(message), xr.CLUSTER_TYPE) == message
    assert xr.to_dict(message) == cluster
    with pytest.raises(xr.ResourceError, match=r"cds resource 'c': .*conect_timeout"):
        xr.from_dict(xr.CLUSTER_TYPE, {"name": "c", "conect_timeout": "1s"})
    with pytest.raises(xr.ResourceError, match="unsupported resource type"):
        xr.from_dict("type.googleapis.com/foo.Bar", {})
