"""Stage 4 grader: the push server.

First the exercises on known inputs (minimesh/pilot/clusters.py, ads.py, sidecar.py), then the mesh they
drive: minimeshd pushes config to the sidecars of sleep and details; a request crosses both proxies; a
scaled Deployment reaches a proxy's endpoints quickly; a config the proxies reject is NACKed and traffic
keeps flowing; a Sidecar resource shrinks what a proxy receives; and traffic survives the push server's
death. Everything goes through the Kubernetes API (exec into pods), so it runs the same on every provider.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from minimesh.lab.grading import GradeFailure, check, eventually, expect, fail, is_ready, missing

SETUP = "minimesh lab setup 04  (= minimesh apply -f minimesh/manifests/crds/ -f minimesh/manifests/lab04/)"
PILOT_LOGS = "minimesh logs deploy/minimeshd -n mesh-system"
CLUSTERS = "minimesh/pilot/clusters.py"
ADS = "minimesh/pilot/ads.py: classify"
SIDECAR = "minimesh/pilot/sidecar.py: host_allowed"
DETAILS_CLUSTER = "outbound|9080||details.default.svc.cluster.local"
EDS_BOUND = 2.0  # seconds from "the EndpointSlice lists the new pod as ready" to "the proxy has it"


# ---- the exercises on known inputs -----------------------------------------------------------------------

def _svc(name: str = "details", ns: str = "default", ports: tuple[tuple[str, int], ...] = (("http", 9080),)) -> Any:
    from minimesh.pilot.model import Service, ServicePort

    return Service(name, ns, "10.96.0.20", tuple(ServicePort(n, p, p) for n, p in ports))


def _slice(endpoints: list[tuple[str, bool | None, bool]], ports: tuple[tuple[str, int], ...] = (("http", 9080),),
           address_type: str = "IPv4", name: str = "details-abc") -> Any:
    from minimesh.pilot.model import EndpointSlice, SliceEndpoint, SlicePort

    return EndpointSlice(name, "default", "details", tuple(SlicePort(n, p) for n, p in ports),
                         tuple(SliceEndpoint((ip,), ready, term) for ip, ready, term in endpoints), address_type)


def test_outbound_cluster() -> None:
    """outbound_cluster: an EDS cluster named like Istio's, with its service in the metadata"""
    from minimesh.pilot import clusters

    svc = _svc()
    got = clusters.outbound_cluster(svc, svc.ports[0])
    check(isinstance(got, dict), want="a dict (an Envoy Cluster)", got=type(got).__name__, hint=CLUSTERS)
    name = "outbound|9080||details.default.svc.cluster.local"
    expect(got.get("name"), name, f"outbound_cluster_name(port.port, service.hostname) ({CLUSTERS})", what="name")
    expect(got.get("type"), "EDS", f"endpoints come separately over EDS ({CLUSTERS})", what="type")
    eds = got.get("eds_cluster_config") or {}
    expect(eds.get("service_name"), name, f"EDS serves the assignment under the cluster's name ({CLUSTERS})",
           what="eds_cluster_config.service_name")
    expect(eds.get("eds_config"), clusters.ADS_CONFIG_SOURCE, CLUSTERS, what="eds_cluster_config.eds_config")
    services = (((got.get("metadata") or {}).get("filter_metadata") or {}).get("istio") or {}).get("services")
    expect(services, [{"host": svc.hostname, "name": "details", "namespace": "default"}], CLUSTERS,
           what="metadata.filter_metadata.istio.services")
    from minimesh.xds import resources as xr

    try:
        xr.from_dict(xr.CLUSTER_TYPE, got)  # what the push server does with it
    except xr.ResourceError as e:
        fail("a dict that is a valid Envoy Cluster", str(e), CLUSTERS)


LOAD_CASES = {
    "ready endpoints, sorted, each once": (
        [_slice([("10.244.0.9", True, False), ("10.244.0.5", None, False)]),
         _slice([("10.244.0.5", True, False)], name="details-def")],
        [("10.244.0.5", 9080), ("10.244.0.9", 9080)], "collect from every slice; ready None counts as ready"),
    "not ready and terminating endpoints are left out": (
        [_slice([("10.244.0.5", False, False), ("10.244.0.6", True, True), ("10.244.0.7", True, False)])],
        [("10.244.0.7", 9080)], "skip ready == False and terminating == True"),
    "the slice port with the service port's name": (
        [_slice([("10.244.0.5", True, False)], ports=(("metrics", 9090), ("http", 8080)))],
        [("10.244.0.5", 8080)], "the endpoints listen on the slice port whose name equals port.name"),
    "FQDN slices and slices without the port are skipped": (
        [_slice([("db.example.com", True, False)], address_type="FQDN"),
         _slice([("10.244.0.5", True, False)], ports=(("grpc", 9000),))],
        [], "skip address_type FQDN and slices without a port named port.name"),
    "no endpoints at all": ([], [], "endpoints is [] when nothing is ready"),
}


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_load_assignment(case: str) -> None:
    """load_assignment: the ready endpoints of a service port"""
    from minimesh.pilot import clusters

    slices, want, hint = LOAD_CASES[case]
    svc = _svc()
    got = clusters.load_assignment(svc, svc.ports[0], slices)
    expect(got.get("cluster_name"), DETAILS_CLUSTER, CLUSTERS, what="cluster_name")
    found = [(e["endpoint"]["address"]["socket_address"]["address"], e["endpoint"]["address"]["socket_address"]["port_value"])
             for loc in got.get("endpoints") or [] for e in loc.get("lb_endpoints") or []]
    if found != want:
        raise GradeFailure(f"endpoints {want}", str(found), f"{hint} ({CLUSTERS}: load_assignment)")
    if not want:
        expect(got.get("endpoints"), [], f"no localities without endpoints ({CLUSTERS})", what="endpoints")


def _request(nonce: str = "", names: tuple[str, ...] = (), error: bool = False, version: str = "") -> Any:
    from envoy.service.discovery.v3 import discovery_pb2

    req = discovery_pb2.DiscoveryRequest(type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster",
                                         response_nonce=nonce, version_info=version, resource_names=list(names))
    if error:
        req.error_detail.message = "bad regex"
    return req


CLASSIFY_CASES = {
    "a type seen for the first time": (None, _request(nonce="old-stream-7"), "NEW"),
    "an ACK of the last response": ("n2", _request(nonce="n2", version="v2", names=("a", "b")), "ACK"),
    "a NACK of the last response": ("n2", _request(nonce="n2", version="v1", error=True), "NACK"),
    "an answer to an older response": ("n3", _request(nonce="n2", version="v2"), "STALE"),
    "a NACK of an older response": ("n3", _request(nonce="n2", error=True), "STALE"),
    "an ACK that asks for other names": ("n2", _request(nonce="n2", names=("b", "a", "c")), "RESUBSCRIBE"),
    "the same names in another order": ("n2", _request(nonce="n2", names=("b", "a")), "ACK"),
}


@pytest.mark.parametrize("case", list(CLASSIFY_CASES))
def test_classify(case: str) -> None:
    """classify: what a DiscoveryRequest means (Istio's shouldRespond)"""
    from minimesh.pilot import ads

    sent, req, want = CLASSIFY_CASES[case]
    watched = None if sent is None else ads.WatchedResource(req.type_url, ("a", "b"), nonce_sent=sent)
    got = ads.classify(req, watched)
    if getattr(got, "name", got) != want:
        raise GradeFailure(f"Decision.{want}", str(got), ADS)


HOSTS_CASES = {
    "./* sees its own namespace": (["./*"], "default", ("details", "default"), True),
    "./* does not see other namespaces": (["./*"], "default", ("cart", "shop"), False),
    "ns/* sees that namespace": (["./*", "mesh-system/*"], "default", ("minimeshd", "mesh-system"), True),
    "*/* sees everything": (["*/*"], "default", ("cart", "shop"), True),
    "an exact FQDN": (["shop/cart.shop.svc.cluster.local"], "default", ("cart", "shop"), True),
    "an exact FQDN matches nothing else": (["shop/cart.shop.svc.cluster.local"], "default", ("ads", "shop"), False),
    "a wildcard suffix": (["*/*.shop.svc.cluster.local"], "default", ("ads", "shop"), True),
    "~ matches no namespace": (["~/*"], "default", ("details", "default"), False),
    "the namespace must match too": (["mesh-system/*.svc.cluster.local"], "default", ("details", "default"), False),
}


@pytest.mark.parametrize("case", list(HOSTS_CASES))
def test_host_allowed(case: str) -> None:
    """host_allowed: Sidecar egress hosts"""
    from minimesh.pilot import sidecar

    hosts, ns, (name, svc_ns), want = HOSTS_CASES[case]
    got = sidecar.host_allowed(hosts, ns, _svc(name, svc_ns))
    if got is not want:
        raise GradeFailure(f"{want} for {name}.{svc_ns} from namespace {ns} with {hosts}", str(got), SIDECAR)


# ---- the mesh on the cluster -----------------------------------------------------------------------------

def _meshed_pod(core: Any, app: str) -> str:
    """A ready pod of `app` that runs the minimesh-proxy sidecar."""
    def find() -> str:
        pods = core.list_namespaced_pod("default", label_selector=f"app={app}").items
        meshed = [p for p in pods if any(c.name == "minimesh-proxy" for c in p.spec.containers)
                  and not p.metadata.deletion_timestamp]
        if not meshed:
            missing(f"a {app} pod with a minimesh-proxy container", SETUP)
        ready = sorted(p.metadata.name for p in meshed if is_ready(p))
        if not ready:
            p = meshed[0]
            states = {c.name: ("ready" if c.ready else "not ready") for c in p.status.container_statuses or []}
            fail(f"pod {p.metadata.name} ready (its proxy has its config from the push server)", states,
                 f"minimesh logs {p.metadata.name} -c minimesh-proxy; {PILOT_LOGS}")
        return ready[0]

    return eventually(find, timeout=150, interval=1)


@pytest.fixture(scope="session")
def pilot_pod(core: Any) -> str:
    def find() -> str:
        pods = [p for p in core.list_namespaced_pod("mesh-system", label_selector="app=minimeshd").items
                if not p.metadata.deletion_timestamp]
        if not pods:
            missing("the minimeshd pod in namespace mesh-system", SETUP)
        ready = [p.metadata.name for p in pods if is_ready(p)]
        check(ready, want="minimeshd ready (its watches have listed the cluster)", got=[p.status.phase for p in pods],
              hint=PILOT_LOGS)
        return ready[0]

    return eventually(find, timeout=120, interval=1)


@pytest.fixture(scope="session")
def sleep_proxy(core: Any, pilot_pod: str) -> str:
    return _meshed_pod(core, "sleep")


@pytest.fixture(scope="session")
def details_proxy(core: Any, pilot_pod: str) -> str:
    return _meshed_pod(core, "details")


def _pilot_get(exec_in: Any, core: Any, path: str) -> str:
    pods = [p.metadata.name for p in core.list_namespaced_pod("mesh-system", label_selector="app=minimeshd").items
            if is_ready(p)]
    check(pods, want="a ready minimeshd pod", got="none", hint=PILOT_LOGS)
    res = exec_in(pods[0], ["curl", "-s", "-m", "5", f"http://127.0.0.1:15014{path}"], namespace="mesh-system",
                  container="discovery")
    check(res.returncode == 0 and res.stdout, want=f"an answer from minimeshd :15014{path}", got=res.stderr or res.stdout,
          hint=PILOT_LOGS)
    return str(res.stdout)


def _syncz(exec_in: Any, core: Any) -> dict[str, dict[str, Any]]:
    return {row["proxy"].split("~")[2].split(".")[0]: row for row in json.loads(_pilot_get(exec_in, core, "/debug/syncz"))}


def _admin(exec_in: Any, pod: str, path: str) -> str:
    res = exec_in(pod, ["curl", "-s", "-m", "5", f"http://127.0.0.1:15000{path}"], container="minimesh-proxy")
    check(res.returncode == 0 and res.stdout, want=f"the proxy's admin API to answer {path}",
          got=res.stderr or f"exit {res.returncode}", hint=f"minimesh logs {pod} -c minimesh-proxy")
    return str(res.stdout)


def _dump(exec_in: Any, pod: str, resource: str) -> list[dict[str, Any]]:
    return list(json.loads(_admin(exec_in, pod, f"/config_dump?resource={resource}"))["configs"])


def _endpoints(exec_in: Any, pod: str, cluster: str = DETAILS_CLUSTER) -> list[str]:
    for c in _dump(exec_in, pod, "dynamic_endpoint_configs"):
        ec = c["endpoint_config"]
        if ec["cluster_name"] == cluster:
            return sorted(e["endpoint"]["address"]["socket_address"]["address"]
                          for loc in ec.get("endpoints") or [] for e in loc.get("lb_endpoints") or [])
    fail(f"an EDS assignment for {cluster} in the proxy of {pod}", "none",
         f"{CLUSTERS}: load_assignment; minimesh logs {pod} -c minimesh-proxy")


def _call_details(http_from: Any, pod: str, tag: str = "") -> Any:
    res = http_from(pod, f"http://details:9080/details/0{'?grader=' + tag if tag else ''}", container="sleep",
                    timeout=5)
    return res


def test_sidecars_get_their_config(exec_in: Any, core: Any, sleep_proxy: str, details_proxy: str) -> None:
    """the push server has pushed every xDS type to both sidecars, and they ACKed"""
    def synced() -> None:
        rows = _syncz(exec_in, core)
        for pod in (sleep_proxy, details_proxy):
            row = rows.get(pod)
            check(row, want=f"{pod} connected to the push server (in /debug/syncz)", got=sorted(rows),
                  hint=f"minimesh logs {pod} -c minimesh-proxy")
            assert row is not None
            state = {t: ("ACKed" if row.get(f"{t}_synced") else row.get(f"{t}_error") or "not ACKed")
                     for t in ("cluster", "endpoint", "listener", "route")}
            expect(state, dict.fromkeys(state, "ACKed"), f"{PILOT_LOGS}; {ADS}", what=f"xDS state of {pod}")

    eventually(synced, timeout=60)


def test_request_through_both_sidecars(exec_in: Any, http_from: Any, sleep_proxy: str, details_proxy: str) -> None:
    """sleep → details crosses both sidecars, configured by the push server (both access logs show it)"""
    tag = secrets.token_hex(4)
    res = eventually(lambda: _ok(_call_details(http_from, sleep_proxy, tag)), timeout=30)
    check('"id"' in res.body, want="the details of book 0", got=str(res), hint="minimesh logs deploy/details-v1")

    def logged() -> None:
        for pod, direction in ((sleep_proxy, "outbound|9080||details"), (details_proxy, "inbound|9080||")):
            lines = [ln for ln in _admin(exec_in, pod, "/access_log").splitlines() if f"grader={tag}" in ln]
            check(lines and direction in lines[-1], want=f"an access log line of the request through {direction}",
                  got=lines[-1] if lines else "no line for this request", hint=f"minimesh logs {pod} -c minimesh-proxy")

    eventually(logged, timeout=10)


def _ok(res: Any) -> Any:
    expect(res.status, 200, "minimesh logs deploy/sleep -c minimesh-proxy", what="GET details:9080/details/0 from sleep")
    return res


def test_scaled_deployment_reaches_the_proxy(exec_in: Any, core: Any, apps: Any, api_client: Any,
                                             sleep_proxy: str) -> None:
    """a new replica of details shows up in sleep's proxy within seconds of being ready (EDS push)"""
    from kubernetes import client

    discovery = client.DiscoveryV1Api(api_client)

    def ready_ips() -> list[str]:
        out = []
        for s in discovery.list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=details").items:
            for e in s.endpoints or []:
                if e.conditions is None or e.conditions.ready is not False:
                    out += list(e.addresses)
        return sorted(set(out))

    before = eventually(lambda: _nonempty(_endpoints(exec_in, sleep_proxy)), timeout=30)
    apps.patch_namespaced_deployment_scale("details-v1", "default", {"spec": {"replicas": 2}})
    try:
        def two_ready() -> list[str]:
            ips = ready_ips()
            check(len(ips) >= 2, want="2 ready endpoints of details", got=ips,
                  hint="minimesh kubectl get pods -l app=details")
            return ips

        ips = eventually(two_ready, timeout=150, interval=0.1)
        seen_at = time.monotonic()
        new = sorted(set(ips) - set(before))
        got: list[str] = []
        while time.monotonic() - seen_at < EDS_BOUND:
            got = _endpoints(exec_in, sleep_proxy)
            if set(new) <= set(got):
                break
            time.sleep(0.05)
        else:
            fail(f"{new} in sleep's EDS for details within {EDS_BOUND:g} s of being ready", f"{got}",
                 f"an EndpointSlice change should push EDS at once; {CLUSTERS}: load_assignment; {PILOT_LOGS}")
    finally:
        apps.patch_namespaced_deployment_scale("details-v1", "default", {"spec": {"replicas": 1}})

    def back_to_one() -> None:
        expect(len(_endpoints(exec_in, sleep_proxy)), 1, "scaled back to 1: the endpoint leaves EDS",
               what="endpoints of details in sleep's proxy")

    eventually(back_to_one, timeout=60)


def _nonempty(value: list[str]) -> list[str]:
    check(value, want="at least one endpoint of details in sleep's proxy", got=value, hint=f"{CLUSTERS}: load_assignment")
    return value


def _custom(api_client: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


def _create(api_client: Any, plural: str, body: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        _custom(api_client).create_namespaced_custom_object("networking.minimesh.io", "v1", "default", plural, body)
    except ApiException as e:
        if e.status == 404:
            missing(f"the {plural} custom resource definition", "minimesh apply -f minimesh/manifests/crds/")
        if e.status != 409:
            raise


def _delete(api_client: Any, plural: str, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        _custom(api_client).delete_namespaced_custom_object("networking.minimesh.io", "v1", "default", plural, name)
    except ApiException as e:
        if e.status != 404:
            raise


def _rejects(exec_in: Any, core: Any) -> float:
    total = 0.0
    for line in _pilot_get(exec_in, core, "/metrics").splitlines():
        if line.startswith("pilot_total_xds_rejects") and not line.startswith("#") and 'type="rds"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


BAD_VS = "lab04-grader-bad-regex"


def test_rejected_config_is_nacked_and_traffic_flows(exec_in: Any, core: Any, http_from: Any, api_client: Any,
                                                     sleep_proxy: str) -> None:
    """a route the proxies cannot parse is NACKed (syncz, pilot_total_xds_rejects) and traffic keeps flowing"""
    _ok(_call_details(http_from, sleep_proxy))
    rejects = _rejects(exec_in, core)
    routes_before = _dump(exec_in, sleep_proxy, "dynamic_route_configs")
    _create(api_client, "virtualservices", {
        "apiVersion": "networking.minimesh.io/v1", "kind": "VirtualService", "metadata": {"name": BAD_VS},
        "spec": {"hosts": ["details"], "http": [{"match": [{"uri": {"regex": "/details/(\\d+"}}],
                                                 "route": [{"destination": {"host": "details"}}]}]}})
    try:
        def nacked() -> str:
            row = _syncz(exec_in, core).get(sleep_proxy) or {}
            check(row.get("route_error"), want="a route_error for sleep's proxy in /debug/syncz (its NACK)",
                  got={k: v for k, v in row.items() if k.startswith("route")},
                  hint=f"{ADS}: an error_detail makes a request a NACK")
            return str(row["route_error"])

        error = eventually(nacked, timeout=30)
        check("regex" in error, want="the proxy's parse error in the NACK", got=error, hint=ADS)
        check(_rejects(exec_in, core) > rejects, want="pilot_total_xds_rejects{type=\"rds\"} to grow",
              got=_rejects(exec_in, core), hint=f"{ADS}; minimeshd :15014/metrics")
        for _ in range(3):
            _ok(_call_details(http_from, sleep_proxy))
        expect(_dump(exec_in, sleep_proxy, "dynamic_route_configs") == routes_before, True,
               "a NACKed response must not change the proxy's routes", what="sleep's routes unchanged")
    finally:
        _delete(api_client, "virtualservices", BAD_VS)

    def recovered() -> None:
        row = _syncz(exec_in, core).get(sleep_proxy) or {}
        check(not row.get("route_error") and row.get("route_synced"), want="the next push ACKed (route_error gone)",
              got={k: v for k, v in row.items() if k.startswith("route")}, hint=ADS)

    eventually(recovered, timeout=30)


SCOPE = "lab04-grader-scope"


def _clusters(exec_in: Any, pod: str) -> tuple[list[str], int]:
    configs = _dump(exec_in, pod, "dynamic_active_clusters")
    return sorted(c["cluster"]["name"] for c in configs), len(json.dumps(configs))


def test_sidecar_scoping_shrinks_the_config(exec_in: Any, http_from: Any, api_client: Any, sleep_proxy: str) -> None:
    """a Sidecar with egress hosts ./* and mesh-system/* shrinks what sleep's proxy receives"""
    names, size = _clusters(exec_in, sleep_proxy)
    check(any(".shop." in n for n in names), want="clusters of the shop namespace in sleep's proxy (no Sidecar yet)",
          got=names, hint=f"{SETUP}; is a Sidecar left over? minimesh kubectl get sidecars -A")
    _create(api_client, "sidecars", {
        "apiVersion": "networking.minimesh.io/v1", "kind": "Sidecar", "metadata": {"name": SCOPE},
        "spec": {"workloadSelector": {"labels": {"app": "sleep"}}, "egress": [{"hosts": ["./*", "mesh-system/*"]}]}})
    try:
        def scoped() -> tuple[list[str], int]:
            now, now_size = _clusters(exec_in, sleep_proxy)
            outside = [n for n in now if n.startswith("outbound|") and not n.endswith((".default.svc.cluster.local",
                                                                                        ".mesh-system.svc.cluster.local"))]
            check(not outside, want="only default and mesh-system services in sleep's clusters", got=outside,
                  hint=SIDECAR)
            check(DETAILS_CLUSTER in now, want=f"{DETAILS_CLUSTER} still there (./* is its own namespace)", got=now,
                  hint=SIDECAR)
            return now, now_size

        after, after_size = eventually(scoped, timeout=30)
        check(len(after) < len(names) and after_size < size, want="fewer clusters, fewer bytes",
              got=f"{len(names)} clusters ({size} B) before, {len(after)} ({after_size} B) with the Sidecar", hint=SIDECAR)
        _ok(_call_details(http_from, sleep_proxy))
    finally:
        _delete(api_client, "sidecars", SCOPE)

    def unscoped() -> None:
        check(any(".shop." in n for n in _clusters(exec_in, sleep_proxy)[0]), want="the shop clusters back once the"
              " Sidecar is deleted", got="still scoped", hint=PILOT_LOGS)

    eventually(unscoped, timeout=30)


def test_traffic_survives_the_push_server(exec_in: Any, core: Any, http_from: Any, sleep_proxy: str,
                                          details_proxy: str) -> None:
    """killing the push server does not break traffic; the proxies reconnect to its replacement"""
    old = [p.metadata.name for p in core.list_namespaced_pod("mesh-system", label_selector="app=minimeshd").items]
    for name in old:
        core.delete_namespaced_pod(name, "mesh-system", grace_period_seconds=0)
    for _ in range(5):
        _ok(_call_details(http_from, sleep_proxy))
        time.sleep(0.5)

    def back() -> None:
        rows = _syncz(exec_in, core)  # from the new pod (the fixture's pilot_pod is gone)
        for pod in (sleep_proxy, details_proxy):
            row = rows.get(pod) or {}
            check(row.get("cluster_synced") and row.get("listener_synced"),
                  want=f"{pod} reconnected to the new push server and ACKed its config",
                  got=row or f"not connected (connected: {sorted(rows)})",
                  hint=f"minimesh logs {pod} -c minimesh-proxy; {PILOT_LOGS}")

    eventually(back, timeout=120, interval=1)
    _ok(_call_details(http_from, sleep_proxy))
