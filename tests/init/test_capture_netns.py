"""Where traffic really lands once the init container's rules are in a pod's network namespace.

Two throwaway namespaces joined by a veth: `pod` (10.250.0.2) gets the rules and a diagnostic listener
run as the proxy (uid 1337) on 15001/15006 and on a few "application" ports; `peer` (10.250.0.1) runs a
plain diagnostic listener. Each answer names the listener that accepted the connection and the original
destination read with SO_ORIGINAL_DST. Both iptables backends (nft and legacy) are exercised.
"""

from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.cluster

PY = sys.executable
PROXY = 1337
EXCLUDED_IN, EXCLUDED_OUT, APP = 7001, 7002, 7003


@pytest.fixture(scope="module", params=["nft", "legacy"])
def mesh(request, netns_support):
    ns = netns_support
    backend = request.param
    with ns.netns_pair(f"init-{backend[:3]}") as (pod, peer):
        done = pod.run(
            [
                PY,
                "-m",
                "minimesh.init",
                "--iptables-backend",
                backend,
                "-d",
                str(EXCLUDED_IN),
                "-o",
                str(EXCLUDED_OUT),
            ]
        )
        assert done.returncode == 0, done.stdout + done.stderr
        pod.diag([15001, 15006, EXCLUDED_IN, APP, 15021], "pod", uid=PROXY)
        peer.diag([9080, 9081, EXCLUDED_OUT], "peer")
        yield {"pod": pod, "peer": peer, "backend": backend, "init_output": done.stdout, "ns": ns}


def landed(answer: dict) -> tuple[str, int, str]:
    assert "error" not in answer, answer
    return answer["name"], answer["listener"], answer["original_dst"]


def test_outbound_from_the_app_lands_on_15001(mesh) -> None:
    ns = mesh["ns"]
    assert landed(mesh["pod"].probe(f"{ns.B_IP}:9080")) == ("pod", 15001, f"{ns.B_IP}:9080")


def test_inbound_lands_on_15006_with_the_original_destination(mesh) -> None:
    ns = mesh["ns"]
    assert landed(mesh["peer"].probe(f"{ns.A_IP}:9080")) == ("pod", 15006, f"{ns.A_IP}:9080")
    http = mesh["peer"].probe(f"{ns.A_IP}:8080", http=True)
    assert landed(http) == ("pod", 15006, f"{ns.A_IP}:8080")
    assert http["request"] == {"method": "GET", "path": "/diag", "host": f"{ns.A_IP}:8080"}


def test_proxy_uid_and_gid_bypass_the_capture(mesh) -> None:
    ns = mesh["ns"]
    assert landed(mesh["pod"].probe(f"{ns.B_IP}:9081", uid=PROXY)) == ("peer", 9081, f"{ns.B_IP}:9081")
    assert landed(mesh["pod"].probe(f"{ns.B_IP}:9081", uid=1000, gid=PROXY)) == (
        "peer",
        9081,
        f"{ns.B_IP}:9081",
    )
    assert landed(mesh["pod"].probe(f"{ns.B_IP}:9081", uid=1000, gid=1000)) == (
        "pod",
        15001,
        f"{ns.B_IP}:9081",
    )


def test_excluded_inbound_ports_bypass(mesh) -> None:
    ns = mesh["ns"]
    assert landed(mesh["peer"].probe(f"{ns.A_IP}:{EXCLUDED_IN}"))[:2] == ("pod", EXCLUDED_IN)
    assert landed(mesh["peer"].probe(f"{ns.A_IP}:15021"))[:2] == ("pod", 15021)  # always excluded


def test_excluded_outbound_ports_bypass(mesh) -> None:
    ns = mesh["ns"]
    assert landed(mesh["pod"].probe(f"{ns.B_IP}:{EXCLUDED_OUT}"))[:2] == ("peer", EXCLUDED_OUT)


def test_app_to_app_over_localhost_and_own_pod_ip_is_untouched(mesh) -> None:
    ns = mesh["ns"]
    assert landed(mesh["pod"].probe(f"127.0.0.1:{APP}"))[:2] == ("pod", APP)
    assert landed(mesh["pod"].probe(f"{ns.A_IP}:{APP}"))[:2] == ("pod", APP)


def test_proxy_to_own_pod_ip_goes_through_the_inbound_listener(mesh) -> None:
    # Istio: app -> Service VIP -> outbound proxy -> this pod's IP is sent to MESH_IN_REDIRECT.
    ns = mesh["ns"]
    assert landed(mesh["pod"].probe(f"{ns.A_IP}:{APP}", uid=PROXY)) == ("pod", 15006, f"{ns.A_IP}:{APP}")
    # ...but the proxy reaching the app on 127.0.0.1 is not captured.
    assert landed(mesh["pod"].probe(f"127.0.0.1:{APP}", uid=PROXY))[:2] == ("pod", APP)


def test_inbound_passthrough_source_127_0_0_6_bypasses(mesh) -> None:
    ns = mesh["ns"]
    answer = mesh["pod"].probe(f"{ns.A_IP}:{APP}", uid=PROXY, bind="127.0.0.6")
    assert landed(answer)[:2] == ("pod", APP)
    assert answer["peer"].startswith("127.0.0.6:")


def test_iptables_save_shows_the_chains(mesh) -> None:
    saved = mesh["pod"].run([f"iptables-{mesh['backend']}-save", "-t", "nat"]).stdout
    for chain in ("MESH_INBOUND", "MESH_IN_REDIRECT", "MESH_OUTPUT", "MESH_REDIRECT"):
        assert f":{chain} " in saved
    assert "-A PREROUTING -p tcp -j MESH_INBOUND" in saved
    assert "-A OUTPUT -p tcp -j MESH_OUTPUT" in saved
    assert "REDIRECT --to-ports 15001" in saved and "REDIRECT --to-ports 15006" in saved
    # The init container logged the rules and what -save showed, for `kubectl logs -c minimesh-init`.
    assert f"iptables backend {mesh['backend']}" in mesh["init_output"]
    assert "-A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN" in mesh["init_output"]
    assert "traffic capture installed" in mesh["init_output"]


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_reinstall_is_idempotent_and_cleanup_removes_everything(netns_support, backend: str) -> None:
    with netns_support.netns(f"init-re-{backend[:3]}") as ns:
        save = [f"iptables-{backend}-save", "-t", "nat"]
        init = [PY, "-m", "minimesh.init", "--iptables-backend", backend]
        assert ns.run([*init, "-d", "7001"]).returncode == 0
        first = [line for line in ns.run(save).stdout.splitlines() if line.startswith("-A")]
        again = ns.run([*init, "-d", "7001"])
        assert again.returncode == 0, again.stderr
        assert "already installed: replacing it" in again.stdout
        second = [line for line in ns.run(save).stdout.splitlines() if line.startswith("-A")]
        assert second == first
        changed = ns.run([*init, "-d", "7005"])
        assert changed.returncode == 0, changed.stderr
        assert "--dport 7005 -j RETURN" in ns.run(save).stdout
        assert "--dport 7001 -j RETURN" not in ns.run(save).stdout
        cleaned = ns.run([*init, "--cleanup"])
        assert cleaned.returncode == 0, cleaned.stderr
        assert "MESH_" not in ns.run(save).stdout
        assert "nothing to remove" in ns.run([*init, "--cleanup"]).stdout


def test_without_net_admin_the_init_fails_with_a_clear_message(netns_support) -> None:
    with netns_support.netns("init-caps") as ns:
        done = ns.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", PY, "-m", "minimesh.init"])
        assert done.returncode != 0
        assert "this container needs the NET_ADMIN and NET_RAW capabilities" in done.stderr
        assert "securityContext.capabilities.add" in done.stderr
        assert "Traceback" not in done.stderr
        assert "MESH_" not in ns.run(["iptables-nft-save", "-t", "nat"]).stdout


def test_auto_detection_follows_the_backend_that_holds_rules(netns_support) -> None:
    with netns_support.netns("init-detect") as ns:
        init = [PY, "-m", "minimesh.init", "-d", "7001"]
        ns.run(
            ["iptables-legacy", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "1", "-j", "ACCEPT"]
        )
        done = ns.run(init)
        assert done.returncode == 0, done.stderr
        assert "iptables backend legacy (detected: 1 legacy rules, 0 nft rules" in done.stdout
        assert "MESH_OUTPUT" in ns.run(["iptables-legacy-save", "-t", "nat"]).stdout


def test_include_lists_capture_only_what_they_name(netns_support) -> None:
    ns = netns_support
    with ns.netns_pair("init-incl") as (pod, peer):
        other_peer = "10.250.0.3"
        assert peer.run(["ip", "addr", "add", f"{other_peer}/24", "dev", "eth0"]).returncode == 0
        done = pod.run([PY, "-m", "minimesh.init", "-b", "9080", "-i", f"{ns.B_IP}/32", "-q", "9443"])
        assert done.returncode == 0, done.stderr
        pod.diag([15001, 15006, 9090], "pod", uid=PROXY)
        peer.diag([9080, 9443], "peer")
        assert landed(peer.probe(f"{ns.A_IP}:9080"))[:2] == ("pod", 15006)
        assert landed(peer.probe(f"{ns.A_IP}:9090"))[:2] == ("pod", 9090)  # inbound port not listed
        assert landed(pod.probe(f"{ns.B_IP}:9080"))[:2] == ("pod", 15001)
        assert landed(pod.probe(f"{other_peer}:9080"))[:2] == ("peer", 9080)  # CIDR not listed
        assert landed(pod.probe(f"{other_peer}:9443")) == ("pod", 15001, f"{other_peer}:9443")  # port listed
