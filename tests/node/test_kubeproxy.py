"""kube-proxy rules: their shape (pure), then real traffic through them in throwaway namespaces."""

from __future__ import annotations

import subprocess
import sys

import pytest

from minimesh.cluster.local.node import proxy_rules
from minimesh.cluster.local.node.proxy_rules import Endpoint, ServicePort, render, service_ports

SVC = {"metadata": {"name": "details", "namespace": "default"},
       "spec": {"clusterIP": "10.96.7.7", "type": "NodePort",
                "ports": [{"name": "http", "port": 9080, "protocol": "TCP", "nodePort": 30080}]}}


def slice_(ips, ready=True, port=9080, name="http"):
    return {"metadata": {"name": "details-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "details"}},
            "addressType": "IPv4", "ports": [{"name": name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips]}


def test_chain_names_are_kube_proxys() -> None:
    # the well-known chain of default/kubernetes:https on every kube-proxy (iptables mode)
    sp = ServicePort("default", "kubernetes", "https", "TCP", "10.96.0.1", 443)
    assert proxy_rules.svc_chain(sp) == "KUBE-SVC-NPX46M4PTMTKRN6Y"


def test_rules_shape() -> None:
    ports = service_ports([SVC], {("default", "details"): [slice_(["10.244.0.2", "10.244.0.6", "10.244.0.7"])]})
    assert [e.ip for e in ports[0].endpoints] == ["10.244.0.2", "10.244.0.6", "10.244.0.7"]
    text = render(ports).text
    svc = proxy_rules.svc_chain(ports[0])
    assert f"-d 10.96.7.7/32 -p tcp -m tcp --dport 9080 -j {svc}" in text
    assert "--probability 0.3333333333" in text and "--probability 0.5000000000" in text
    assert "-j DNAT --to-destination 10.244.0.6:9080" in text
    assert "-A KUBE-NODEPORTS" in text and "--dport 30080" in text
    assert "! -s 10.244.0.0/16 -d 10.96.7.7/32 -p tcp -m tcp --dport 9080 -j KUBE-MARK-MASQ" in text
    assert text.index("KUBE-NODEPORTS\n") < text.index("COMMIT\n", text.index("*nat"))


def test_no_ready_endpoints_reject_and_terminating_fallback() -> None:
    ports = service_ports([SVC], {("default", "details"): [slice_(["10.244.0.2"], ready=False)]})
    assert ports[0].endpoints == []
    text = render(ports).text
    assert '"default/details:http has no endpoints"' in text and "REJECT --reject-with icmp-port-unreachable" in text
    terminating = slice_(["10.244.0.2"], ready=False)
    terminating["endpoints"][0]["conditions"].update(serving=True, terminating=True)
    assert service_ports([SVC], {("default", "details"): [terminating]})[0].endpoints == [Endpoint("10.244.0.2", 9080)]


def test_stale_chains_are_deleted() -> None:
    old = service_ports([SVC], {("default", "details"): [slice_(["10.244.0.2"])]})
    first = render(old)
    second = render(service_ports([], {}), stale_nat=first.nat_chains)
    for chain in first.nat_chains - second.nat_chains:
        assert f"-X {chain}" in second.text


@pytest.fixture
def two_netns(need_root, tmp_path, monkeypatch):
    """A node netns wired by setup_node_network and one pod sandbox (10.244.0.2) with a TCP server on 9080."""
    import secrets
    import uuid

    from minimesh.cluster.local import hostnet
    from minimesh.cluster.local.layout import ClusterLayout
    from minimesh.cluster.local.node.sandbox import Sandboxes, setup_node_network

    monkeypatch.setenv("MINIMESH_STATE_DIR", str(tmp_path))
    layout = ClusterLayout(name=f"k{secrets.token_hex(4)}", index=0, api_port=0, source_root="/")
    layout.state_dir.mkdir(parents=True)
    subprocess.run(["ip", "netns", "add", layout.node_netns], check=True)
    sandboxes = Sandboxes(layout)
    uid = str(uuid.uuid4())
    procs = []
    try:
        subprocess.run(["ip", "-n", layout.node_netns, "link", "set", "lo", "up"], check=True)
        setup_node_network(layout)
        sb = sandboxes.create({"metadata": {"uid": uid, "name": "p", "namespace": "default"}, "spec": {}})
        assert sb.pod_ip == "10.244.0.2"
        server = subprocess.Popen(["ip", "netns", "exec", sb.netns, sys.executable, "-c",
                                   "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                                   "s.bind(('0.0.0.0', 9080)); s.listen(8); print('up', flush=True)\n"
                                   "while True:\n c,a=s.accept(); c.sendall(('hello %s' % a[0]).encode()); c.close()"],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        assert server.stdout.readline().strip() == "up"
        yield layout.node_netns, sb.netns
    finally:
        for p in procs:
            p.kill()
            p.wait()
        sandboxes.destroy(uid)
        hostnet.delete_netns(layout.node_netns)


def connect_from(netns: str, ip: str, port: int) -> str:
    code = ("import socket,sys\ns=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
            "print(s.recv(100).decode())")
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, ip, str(port)],
                          capture_output=True, text=True, timeout=20)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def test_cluster_ip_traffic_and_reject(two_netns) -> None:
    node, _ = two_netns
    from minimesh.cluster.local.node.kubeproxy import KubeProxy
    from minimesh.k8s.aclient import Informer

    services, slices = Informer(None, "/services"), Informer(None, "/slices")  # type: ignore[arg-type]
    empty = {"metadata": {"name": "empty", "namespace": "default"},
             "spec": {"clusterIP": "10.96.8.8", "ports": [{"port": 80, "protocol": "TCP"}]}}
    services.cache = {"default/details": SVC, "default/empty": empty}
    slices.cache = {"default/details-x": slice_(["10.244.0.2"])}
    kp = KubeProxy(services, slices, netns=node)
    try:
        kp.sync()
        # from the node itself (OUTPUT chain + the 10.96/12 route) to the pod behind the ClusterIP
        assert connect_from(node, "10.96.7.7", 9080) == "hello 10.244.0.1"
        # no endpoints: rejected at once (ICMP port unreachable -> connection refused), not a timeout
        assert "Connection refused" in connect_from(node, "10.96.8.8", 80)
        slices.cache = {}
        kp.sync()
        assert "Connection refused" in connect_from(node, "10.96.7.7", 9080)
        saved = subprocess.run(["ip", "netns", "exec", node, "iptables-save"], capture_output=True, text=True).stdout
        assert "KUBE-SEP-" not in saved  # stale endpoint chains were removed
    finally:
        kp.cleanup()
    saved = subprocess.run(["ip", "netns", "exec", node, "iptables-save"], capture_output=True, text=True).stdout
    assert "KUBE-" not in saved


def test_hairpin_from_the_pod_to_its_own_service(two_netns) -> None:
    node, pod = two_netns
    from minimesh.cluster.local.node.kubeproxy import KubeProxy
    from minimesh.k8s.aclient import Informer

    services, slices = Informer(None, "/services"), Informer(None, "/slices")  # type: ignore[arg-type]
    services.cache = {"default/details": SVC}
    slices.cache = {"default/details-x": slice_(["10.244.0.2"])}
    kp = KubeProxy(services, slices, netns=node)
    try:
        kp.sync()
        subprocess.run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        reply = connect_from(pod, "10.96.7.7", 9080)
        assert reply.startswith("hello ") and reply != "hello 10.244.0.2", reply  # masqueraded (hairpin)
    finally:
        kp.cleanup()

