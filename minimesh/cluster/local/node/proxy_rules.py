"""kube-proxy's iptables rules (iptables mode), rendered as one iptables-restore input (pure).

Chain names and rule shapes follow pkg/proxy/iptables/proxier.go: KUBE-SERVICES → KUBE-SVC-<hash>
→ KUBE-SEP-<hash> (random with `-m statistic`), DNAT to ready endpoints, KUBE-NODEPORTS → KUBE-EXT-<hash>,
KUBE-MARK-MASQ + KUBE-POSTROUTING MASQUERADE, and REJECT rules in the filter table for services
without endpoints.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from minimesh.cluster.local.layout import POD_CIDR

MASQ_MARK = "0x4000"
AFFINITY_SECONDS = 10800


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int


@dataclass
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP | UDP | SCTP
    cluster_ip: str
    port: int
    node_port: int = 0
    affinity_seconds: int = 0  # sessionAffinity ClientIP
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def port_id(self) -> str:
        """`ns/name:port-name` (servicePortName.String())."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(sp: ServicePort) -> str:
    return "KUBE-SVC-" + _hash(sp.port_id + sp.protocol.lower())


def ext_chain(sp: ServicePort) -> str:
    return "KUBE-EXT-" + _hash(sp.port_id + sp.protocol.lower())


def sep_chain(sp: ServicePort, ep: Endpoint) -> str:
    return "KUBE-SEP-" + _hash(sp.port_id + sp.protocol.lower() + f"{ep.ip}:{ep.port}")


def endpoints_for(port: dict[str, Any], slices: list[dict[str, Any]]) -> list[Endpoint]:
    """Ready endpoints for one service port; serving-but-terminating ones only when none is ready."""
    name = port.get("name") or ""
    proto = port.get("protocol") or "TCP"
    ready: list[Endpoint] = []
    serving: list[Endpoint] = []
    for sl in slices:
        if sl.get("addressType", "IPv4") != "IPv4":
            continue
        sport = next((p for p in sl.get("ports") or [] if (p.get("name") or "") == name
                      and (p.get("protocol") or "TCP") == proto), None)
        if sport is None or sport.get("port") is None:
            continue
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            for addr in ep.get("addresses") or []:
                e = Endpoint(addr, int(sport["port"]))
                if cond.get("ready") is not False:
                    ready.append(e)
                elif cond.get("serving") and cond.get("terminating"):
                    serving.append(e)
    chosen = ready or serving
    return sorted(set(chosen), key=lambda e: (tuple(int(x) for x in e.ip.split(".")), e.port))


def service_ports(services: list[dict[str, Any]], slices_by_service: dict[tuple[str, str], list[dict[str, Any]]]) -> list[ServicePort]:
    out = []
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if spec.get("type") == "ExternalName" or not ip or ip == "None":
            continue
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
            affinity = int(cfg.get("timeoutSeconds") or AFFINITY_SECONDS)
        slices = slices_by_service.get((ns, name), [])
        for p in spec.get("ports") or []:
            out.append(ServicePort(
                ns, name, p.get("name") or "", p.get("protocol") or "TCP", ip, int(p["port"]),
                int(p.get("nodePort") or 0) if spec.get("type") in ("NodePort", "LoadBalancer") else 0,
                affinity, endpoints_for(p, slices),
            ))
    return sorted(out, key=lambda sp: (sp.port_id, sp.protocol))


@dataclass
class Ruleset:
    text: str
    nat_chains: set[str]
    filter_chains: set[str]


STATIC_NAT = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
STATIC_FILTER = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD"]

# (table, chain, rule) jumps from the built-in chains, ensured once (kube-proxy's iptablesJumpChains)
JUMPS = [
    ("nat", "PREROUTING", ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]),
    ("nat", "OUTPUT", ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]),
    ("nat", "POSTROUTING", ["-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"]),
    ("filter", "INPUT", ["-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                         "kubernetes externally-visible service portals", "-j", "KUBE-EXTERNAL-SERVICES"]),
    ("filter", "FORWARD", ["-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                           "kubernetes service portals", "-j", "KUBE-SERVICES"]),
    ("filter", "FORWARD", ["-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                           "kubernetes externally-visible service portals", "-j", "KUBE-EXTERNAL-SERVICES"]),
    ("filter", "FORWARD", ["-m", "comment", "--comment", "kubernetes forwarding rules", "-j", "KUBE-FORWARD"]),
    ("filter", "OUTPUT", ["-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                          "kubernetes service portals", "-j", "KUBE-SERVICES"]),
]


def _q(comment: str) -> str:
    return '"' + comment.replace('"', "'") + '"'


def render(ports: list[ServicePort], *, stale_nat: set[str] = frozenset(), stale_filter: set[str] = frozenset(),
           cluster_cidr: str = POD_CIDR) -> Ruleset:
    """The complete iptables-restore input (for `--noflush`): our chains are redeclared (so flushed) and
    rebuilt; chains that existed before but are no longer needed are deleted with -X."""
    nat_chains: list[str] = list(STATIC_NAT)
    filt: list[str] = []
    nat: list[str] = [
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]
    filt += [
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    ]
    for sp in ports:
        proto = sp.protocol.lower()
        match = f"-p {proto} -m {proto}"
        if not sp.endpoints:
            filt.append(f"-A KUBE-SERVICES -m comment --comment {_q(sp.port_id + ' has no endpoints')} "
                        f"-d {sp.cluster_ip}/32 {match} --dport {sp.port} -j REJECT --reject-with icmp-port-unreachable")
            if sp.node_port:
                filt.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {_q(sp.port_id + ' has no endpoints')} "
                            f"-m addrtype --dst-type LOCAL {match} --dport {sp.node_port} "
                            "-j REJECT --reject-with icmp-port-unreachable")
            continue
        svc = svc_chain(sp)
        nat_chains.append(svc)
        nat.append(f"-A KUBE-SERVICES -m comment --comment {_q(sp.port_id + ' cluster IP')} "
                   f"-d {sp.cluster_ip}/32 {match} --dport {sp.port} -j {svc}")
        nat.append(f"-A {svc} -m comment --comment {_q(sp.port_id + ' cluster IP')} ! -s {cluster_cidr} "
                   f"-d {sp.cluster_ip}/32 {match} --dport {sp.port} -j KUBE-MARK-MASQ")
        if sp.node_port:
            ext = ext_chain(sp)
            nat_chains.append(ext)
            nat.append(f"-A KUBE-NODEPORTS -m comment --comment {_q(sp.port_id)} {match} --dport {sp.node_port} -j {ext}")
            nat.append(f"-A {ext} -m comment --comment {_q('masquerade traffic for ' + sp.port_id + ' external destinations')} "
                       "-j KUBE-MARK-MASQ")
            nat.append(f"-A {ext} -j {svc}")
        seps = [(ep, sep_chain(sp, ep)) for ep in sp.endpoints]
        if sp.affinity_seconds:
            for ep, sep in seps:
                nat.append(f"-A {svc} -m comment --comment {_q(f'{sp.port_id} -> {ep.ip}:{ep.port}')} -m recent "
                           f"--name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {sp.affinity_seconds} "
                           f"--reap -j {sep}")
        n = len(seps)
        for i, (ep, sep) in enumerate(seps):
            comment = _q(f"{sp.port_id} -> {ep.ip}:{ep.port}")
            if i < n - 1:
                nat.append(f"-A {svc} -m comment --comment {comment} -m statistic --mode random "
                           f"--probability {1.0 / (n - i):0.10f} -j {sep}")
            else:
                nat.append(f"-A {svc} -m comment --comment {comment} -j {sep}")
        for ep, sep in seps:
            nat_chains.append(sep)
            nat.append(f"-A {sep} -m comment --comment {_q(sp.port_id)} -s {ep.ip}/32 -j KUBE-MARK-MASQ")
            recent = f"-m recent --name {sep} --mask 255.255.255.255 --rsource --set " if sp.affinity_seconds else ""
            nat.append(f"-A {sep} -m comment --comment {_q(sp.port_id)} {recent}{match} "
                       f"-j DNAT --to-destination {ep.ip}:{ep.port}")
    nat.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
               'rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')

    nat_set = list(dict.fromkeys(nat_chains))
    lines = ["*filter", *(f":{c} - [0:0]" for c in STATIC_FILTER), *filt]
    lines += [f"-X {c}" for c in sorted(stale_filter - set(STATIC_FILTER))]
    lines += ["COMMIT", "*nat", *(f":{c} - [0:0]" for c in nat_set)]
    stale = sorted(stale_nat - set(nat_set))
    lines += [f":{c} - [0:0]" for c in stale]  # flushed first so that -X works even if they jump to each other
    lines += nat
    lines += [f"-X {c}" for c in stale]
    lines += ["COMMIT", ""]
    return Ruleset("\n".join(lines), set(nat_set), set(STATIC_FILTER))
