"""The ADS client state machine (pure): subscriptions, ACK/NACK, merging, reconnects."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from minimesh.xds import resources as xr
from minimesh.xds.state import AdsState, ResponseError


def cluster(name: str, eds: bool = True) -> dict:
    if eds:
        return {"name": name, "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}, "service_name": name}}
    return {"name": name, "type": "STATIC"}


def cla(name: str, *ips: str) -> dict:
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": 80}}}} for ip in ips]}]}


def listener(name: str, route: str | None) -> dict:
    filters = []
    if route is not None:
        filters.append({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": xr.HCM_TYPE, "stat_prefix": name,
            "rds": {"config_source": {"ads": {}}, "route_config_name": route}}})
    return {"name": name, "filter_chains": [{"filters": filters}]}


def response(type_url: str, version: str, nonce: str, *items: dict) -> discovery_pb2.DiscoveryResponse:
    resp = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    for item in items:
        resp.resources.append(xr.pack(xr.from_dict(type_url, item)))
    return resp


@pytest.fixture
def state() -> AdsState:
    node = json_format.ParseDict({"id": "sidecar~10.0.0.1~a.default~default.svc.cluster.local"}, base_pb2.Node())
    return AdsState(node)


def test_opening_requests_subscribe_cds_and_lds_with_the_node_once(state: AdsState) -> None:
    reqs = state.connected()
    assert [r.type_url for r in reqs] == [xr.CLUSTER_TYPE, xr.LISTENER_TYPE]
    assert reqs[0].node.id.startswith("sidecar~") and not reqs[1].HasField("node")
    assert all(r.version_info == "" and r.response_nonce == "" and not r.resource_names for r in reqs)


def test_ack_repeats_version_and_nonce_and_cds_drives_the_eds_subscription(state: AdsState) -> None:
    state.connected()
    update = state.receive(response(xr.CLUSTER_TYPE, "v1", "n1", cluster("b"), cluster("a"), cluster("s", eds=False)))
    assert [m.name for m in update.resources] == ["b", "a", "s"]
    ack, eds = state.accept(update)
    assert (ack.type_url, ack.version_info, ack.response_nonce) == (xr.CLUSTER_TYPE, "v1", "n1")
    assert not ack.HasField("error_detail")
    assert (eds.type_url, list(eds.resource_names), eds.response_nonce, eds.version_info) == (xr.ENDPOINT_TYPE, ["a", "b"], "", "")
    # The same clusters again: just an ACK, no new subscription.
    assert len(state.accept(state.receive(response(xr.CLUSTER_TYPE, "v2", "n2", cluster("a"), cluster("b"))))) == 1


def test_lds_drives_the_rds_subscription(state: AdsState) -> None:
    state.connected()
    reqs = state.accept(state.receive(response(xr.LISTENER_TYPE, "v1", "n1", listener("0.0.0.0_9080", "9080"),
                                               listener("0.0.0.0_80", "80"), listener("tcp", None))))
    assert [(r.type_url, list(r.resource_names)) for r in reqs] == [(xr.LISTENER_TYPE, []), (xr.ROUTE_TYPE, ["80", "9080"])]


def test_nack_keeps_the_previous_version_and_the_accepted_config(state: AdsState) -> None:
    state.connected()
    state.accept(state.receive(response(xr.CLUSTER_TYPE, "v1", "n1", cluster("a"))))
    bad = state.receive(response(xr.CLUSTER_TYPE, "v2", "n2", cluster("a"), cluster("b")))
    (nack,) = state.reject(bad.type_url, bad.nonce, "cluster b: no such thing")
    assert (nack.version_info, nack.response_nonce) == ("v1", "n2")
    assert nack.error_detail.message == "cluster b: no such thing" and nack.error_detail.code == 3
    assert state.acked_version(xr.CLUSTER_TYPE) == "v1"
    assert [m.name for m in state.accepted(xr.CLUSTER_TYPE)] == ["a"]
    assert state.subscriptions[xr.CLUSTER_TYPE].last_error == "cluster b: no such thing"


def test_eds_responses_merge_and_unrequested_names_are_ignored(state: AdsState) -> None:
    state.connected()
    state.accept(state.receive(response(xr.CLUSTER_TYPE, "v1", "n1", cluster("a"), cluster("b"))))
    state.accept(state.receive(response(xr.ENDPOINT_TYPE, "v1", "n2", cla("a", "10.0.0.1"), cla("b", "10.0.0.2"))))
    # An incremental response with only "a" (and one we never asked for) keeps "b".
    update = state.receive(response(xr.ENDPOINT_TYPE, "v2", "n3", cla("a", "10.0.0.9"), cla("zzz", "10.0.0.3")))
    got = {m.cluster_name: m.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address for m in update.resources}
    assert got == {"a": "10.0.0.9", "b": "10.0.0.2"}
    # Clusters shrink: the EDS subscription follows and drops what it no longer asks for.
    _, resub = state.accept(state.receive(response(xr.CLUSTER_TYPE, "v3", "n4", cluster("b"))))
    assert list(resub.resource_names) == ["b"] and resub.response_nonce == "n2"
    assert [m.cluster_name for m in state.accepted(xr.ENDPOINT_TYPE)] == ["b"]


def test_reconnect_rerequests_with_acked_versions_and_no_nonces(state: AdsState) -> None:
    state.connected()
    state.accept(state.receive(response(xr.CLUSTER_TYPE, "v1", "n1", cluster("a"))))
    state.accept(state.receive(response(xr.ENDPOINT_TYPE, "v1", "n2", cla("a", "10.0.0.1"))))
    reqs = state.connected()
    assert [(r.type_url, r.version_info, r.response_nonce, list(r.resource_names)) for r in reqs] == [
        (xr.CLUSTER_TYPE, "v1", "", []), (xr.ENDPOINT_TYPE, "v1", "", ["a"]), (xr.LISTENER_TYPE, "", "", []),
    ]
    assert reqs[0].HasField("node") and not reqs[1].HasField("node")


@pytest.mark.parametrize("build, message", [
    (lambda: response(xr.CLUSTER_TYPE, "v", "n", cluster("a"), cluster("a")), "duplicate cds resource 'a'"),
    (lambda: response(xr.CLUSTER_TYPE, "v", "n", {"name": ""}), "without a name"),
    (lambda: response(xr.ROUTE_TYPE, "v", "n"), "never subscribed"),
])
def test_unusable_responses_are_errors_that_say_why(state: AdsState, build, message: str) -> None:
    state.connected()
    with pytest.raises(ResponseError, match=message):
        state.receive(build())


def test_a_resource_of_the_wrong_type_is_refused(state: AdsState) -> None:
    state.connected()
    resp = response(xr.CLUSTER_TYPE, "v", "n", cluster("a"))
    resp.resources.append(xr.pack(xr.from_dict(xr.LISTENER_TYPE, listener("l", None))))
    with pytest.raises(ResponseError, match=r"resources\[1\]: a '.*Listener' in a response for"):
        state.receive(resp)
