"""Cluster DNS answers, like CoreDNS's kubernetes plugin (pure: objects in, dnslib records out).

    <svc>.<ns>.svc.cluster.local          A    ClusterIP (headless: the ready endpoint IPs)
    <host>.<svc>.<ns>.svc.cluster.local   A    an endpoint with that hostname (headless services)
    <a-b-c-d>.<ns>.pod.cluster.local      A    a.b.c.d
    _<port>._<proto>.<svc>.<ns>.svc...    SRV  port and target
    <reversed ip>.in-addr.arpa            PTR  services, endpoints, then pods (a-b-c-d.<ns>.pod...)
    anything else                         NXDOMAIN (the cluster has no upstream resolver)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, SOA, SRV, A, DNSLabel, DNSRecord

from minimesh.cluster.local.layout import CLUSTER_DOMAIN

TTL = 5


@dataclass
class Index:
    """What the resolver looks up; rebuilt (cheaply) from informer caches on every change."""

    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (ns, name) -> Service
    slices: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (ns, svc) -> slices
    namespaces: set[str] = field(default_factory=set)
    pod_ips: dict[str, str] = field(default_factory=dict)  # pod IP -> namespace (reverse lookups)

    @classmethod
    def build(cls, services: list[dict[str, Any]], slices: list[dict[str, Any]], namespaces: list[str] | None = None,
              pods: list[dict[str, Any]] | None = None) -> Index:
        idx = cls()
        for p in pods or []:
            spec, status = p.get("spec") or {}, p.get("status") or {}
            if status.get("podIP") and not spec.get("hostNetwork") and status.get("phase") in ("Pending", "Running"):
                idx.pod_ips[status["podIP"]] = p["metadata"]["namespace"]
        for s in services:
            idx.services[(s["metadata"]["namespace"], s["metadata"]["name"])] = s
            idx.namespaces.add(s["metadata"]["namespace"])
        for sl in slices:
            svc = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
            if svc:
                idx.slices.setdefault((sl["metadata"]["namespace"], svc), []).append(sl)
        idx.namespaces.update(namespaces or [])
        return idx


def ready_endpoints(slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for sl in slices:
        if sl.get("addressType", "IPv4") != "IPv4":
            continue
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is not False:
                out.append(ep)
    return out


class Resolver:
    def __init__(self, index: Index, domain: str = CLUSTER_DOMAIN):
        self.index = index
        self.domain = domain.strip(".")

    def soa(self) -> RR:
        return RR(self.domain + ".", QTYPE.SOA, ttl=TTL,
                  rdata=SOA(f"ns.dns.{self.domain}.", f"hostmaster.{self.domain}.", (1, 7200, 1800, 86400, TTL)))

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()
        reply.header.ra = 0
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        records, exists = self.lookup(name, q.qtype)
        for rr in records:
            reply.add_answer(rr)
        if not records:
            if not exists:
                reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self.soa())
        return reply

    # (records, name exists) — an existing name with no records of the type is NODATA, not NXDOMAIN
    def lookup(self, name: str, qtype: int) -> tuple[list[RR], bool]:
        if name.endswith(".in-addr.arpa"):
            return self._ptr(name, qtype)
        suffix = "." + self.domain
        if not name.endswith(suffix) and name != self.domain:
            return [], False
        parts = name[: -len(suffix)].split(".") if name != self.domain else []
        if not parts:
            return [], True
        if parts[-1] == "svc":
            return self._svc(name, parts[:-1], qtype)
        if parts[-1] == "pod":
            return self._pod(name, parts[:-1], qtype)
        return [], False

    def _a(self, name: str, ips: list[str], qtype: int) -> tuple[list[RR], bool]:
        if qtype in (QTYPE.A, QTYPE.ANY):
            return [RR(name + ".", QTYPE.A, ttl=TTL, rdata=A(ip)) for ip in ips], True
        return [], True

    def _svc(self, name: str, parts: list[str], qtype: int) -> tuple[list[RR], bool]:
        if len(parts) == 1:  # <ns>.svc
            return [], parts[0] in self.index.namespaces
        if len(parts) == 2:
            svc_name, ns = parts
            svc = self.index.services.get((ns, svc_name))
            if svc is None:
                return [], False
            spec = svc.get("spec") or {}
            if spec.get("type") == "ExternalName":
                target = spec.get("externalName", "").rstrip(".") + "."
                if qtype in (QTYPE.CNAME, QTYPE.A, QTYPE.ANY):
                    from dnslib import CNAME

                    return [RR(name + ".", QTYPE.CNAME, ttl=TTL, rdata=CNAME(target))], True
                return [], True
            if qtype == QTYPE.SRV:
                return self._srv_all(name, svc, ns), True
            ip = spec.get("clusterIP")
            if ip and ip != "None":
                return self._a(name, [ip], qtype)
            ips = sorted({a for ep in ready_endpoints(self.index.slices.get((ns, svc_name), []))
                          for a in ep.get("addresses") or []})
            return self._a(name, ips, qtype)
        if len(parts) == 3:
            first, svc_name, ns = parts
            svc = self.index.services.get((ns, svc_name))
            if svc is None:
                return [], False
            eps = ready_endpoints(self.index.slices.get((ns, svc_name), []))
            ips = [a for ep in eps if (ep.get("hostname") or "") == first
                   or dashed(ep.get("addresses", [""])[0]) == first for a in ep.get("addresses") or []]
            if ips:
                return self._a(name, ips, qtype)
            return [], first.startswith("_")  # _port._proto.svc.ns.svc without the type SRV
        if len(parts) == 4 and parts[0].startswith("_") and parts[1].startswith("_"):
            port_name, proto, svc_name, ns = parts[0][1:], parts[1][1:], parts[2], parts[3]
            svc = self.index.services.get((ns, svc_name))
            if svc is None:
                return [], False
            ports = [p for p in (svc.get("spec") or {}).get("ports") or []
                     if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP").lower() == proto]
            if not ports:
                return [], False
            if qtype not in (QTYPE.SRV, QTYPE.ANY):
                return [], True
            return self._srv(name, svc, ns, ports), True
        return [], False

    def _srv_targets(self, svc: dict[str, Any], ns: str) -> list[tuple[str, str]]:
        svc_name = svc["metadata"]["name"]
        base = f"{svc_name}.{ns}.svc.{self.domain}."
        ip = (svc.get("spec") or {}).get("clusterIP")
        if ip and ip != "None":
            return [(base, ip)]
        out = []
        for ep in ready_endpoints(self.index.slices.get((ns, svc_name), [])):
            for a in ep.get("addresses") or []:
                out.append((f"{ep.get('hostname') or dashed(a)}.{base}", a))
        return out

    def _srv(self, name: str, svc: dict[str, Any], ns: str, ports: list[dict[str, Any]]) -> list[RR]:
        out = []
        for p in ports:
            for target, _ in self._srv_targets(svc, ns):
                out.append(RR(name + ".", QTYPE.SRV, ttl=TTL, rdata=SRV(0, 100, int(p["port"]), target)))
        return out

    def _srv_all(self, name: str, svc: dict[str, Any], ns: str) -> list[RR]:
        return self._srv(name, svc, ns, [p for p in (svc.get("spec") or {}).get("ports") or []])

    def _pod(self, name: str, parts: list[str], qtype: int) -> tuple[list[RR], bool]:
        if len(parts) == 1:
            return [], parts[0] in self.index.namespaces
        if len(parts) != 2:
            return [], False
        try:
            ip = str(ipaddress.IPv4Address(parts[0].replace("-", ".")))
        except ValueError:
            return [], False
        return self._a(name, [ip], qtype)

    def _ptr(self, name: str, qtype: int) -> tuple[list[RR], bool]:
        octets = name[: -len(".in-addr.arpa")].split(".")
        if len(octets) != 4:
            return [], False
        ip = ".".join(reversed(octets))
        targets = []
        for (ns, svc_name), svc in self.index.services.items():
            if (svc.get("spec") or {}).get("clusterIP") == ip:
                targets.append(f"{svc_name}.{ns}.svc.{self.domain}.")
        if not targets:
            for (ns, svc_name), slices in self.index.slices.items():
                for ep in ready_endpoints(slices):
                    if ip in (ep.get("addresses") or []):
                        targets.append(f"{ep.get('hostname') or dashed(ip)}.{svc_name}.{ns}.svc.{self.domain}.")
        if not targets and ip in self.index.pod_ips:
            targets.append(f"{dashed(ip)}.{self.index.pod_ips[ip]}.pod.{self.domain}.")
        if not targets:
            return [], False
        if qtype not in (QTYPE.PTR, QTYPE.ANY):
            return [], True
        return [RR(name + ".", QTYPE.PTR, ttl=TTL, rdata=PTR(t)) for t in sorted(set(targets))], True


def dashed(ip: str) -> str:
    return ip.replace(".", "-")


__all__ = ["AAAA", "DNSLabel", "Index", "Resolver"]
