"""ClusterIP and NodePort allocation for Services (pure: the caller passes the services that exist).

Allocations live in the Service objects themselves, so they survive restarts and are released when
the Service is deleted or changes type."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.layout import NODE_PORT_RANGE, SERVICE_CIDR

Obj = dict[str, Any]
NET = ipaddress.IPv4Network(SERVICE_CIDR)
# Like the real allocator, dynamic IPs come from above a small static band kept for explicit requests.
STATIC_BAND = min(max(16, NET.num_addresses // 16), 256)


def _used_ips(services: list[Obj], skip_uid: str | None) -> set[str]:
    out = set()
    for s in services:
        if skip_uid and s["metadata"].get("uid") == skip_uid:
            continue
        for ip in (s.get("spec") or {}).get("clusterIPs") or [(s.get("spec") or {}).get("clusterIP")]:
            if ip and ip != "None":
                out.add(ip)
    return out


def _used_ports(services: list[Obj], skip_uid: str | None) -> set[int]:
    out = set()
    for s in services:
        if skip_uid and s["metadata"].get("uid") == skip_uid:
            continue
        for p in (s.get("spec") or {}).get("ports") or []:
            if p.get("nodePort"):
                out.add(int(p["nodePort"]))
    return out


def allocate(svc: Obj, old: Obj | None, services: list[Obj]) -> list[E.Cause]:
    """Fill in clusterIP(s)/ipFamilies/nodePorts on `svc` (mutated). Returns field errors (422)."""
    spec = svc.setdefault("spec", {})
    typ = spec.get("type", "ClusterIP")
    causes: list[E.Cause] = []
    uid = svc["metadata"].get("uid")
    old_spec = (old or {}).get("spec") or {}

    if typ == "ExternalName":
        for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            spec.pop(k, None)
    else:
        if old is not None and not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]  # omitted on update: keep the allocation
        ip = spec.get("clusterIP") or ((spec.get("clusterIPs") or [None])[0])
        if ip == "None":
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
        elif ip and ip == old_spec.get("clusterIP"):
            spec["clusterIPs"] = [ip]
        elif ip:
            try:
                addr = ipaddress.IPv4Address(ip)
            except ValueError:
                causes.append(E.invalid_value("spec.clusterIPs[0]", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
                return causes
            if addr not in NET or addr in (NET.network_address, NET.broadcast_address):
                causes.append(E.invalid_value("spec.clusterIPs", [ip], "failed to allocate IP " + ip
                              + f": provided IP ({ip}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}"))
                return causes
            if ip in _used_ips(services, uid):
                causes.append(E.invalid_value("spec.clusterIPs", [ip], f"failed to allocate IP {ip}: provided IP is already allocated"))
                return causes
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        else:
            used = _used_ips(services, uid)
            first = int(NET.network_address) + STATIC_BAND
            last = int(NET.broadcast_address) - 1
            for _ in range(1000):
                cand = str(ipaddress.IPv4Address(random.randint(first, last)))
                if cand not in used:
                    break
            else:
                cand = next((str(ipaddress.IPv4Address(i)) for i in range(first, last) if str(ipaddress.IPv4Address(i)) not in used), "")
                if not cand:
                    causes.append(E.Cause("FieldValueInvalid", "range is full", "spec.clusterIPs"))
                    return causes
            spec["clusterIP"] = cand
            spec["clusterIPs"] = [cand]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")

    lo, hi = NODE_PORT_RANGE
    if typ in ("NodePort", "LoadBalancer"):
        used_ports = _used_ports(services, uid)
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in old_spec.get("ports") or []}
        taken: set[int] = set()
        for i, p in enumerate(spec.get("ports") or []):
            np_ = p.get("nodePort")
            if not np_:
                np_ = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if np_:
                np_ = int(np_)
                if not lo <= np_ <= hi:
                    causes.append(E.invalid_value(f"spec.ports[{i}].nodePort", np_,
                                  f"provided port is not in the valid range. The range of valid ports is {lo}-{hi}"))
                elif np_ in used_ports or np_ in taken:
                    causes.append(E.invalid_value(f"spec.ports[{i}].nodePort", np_, "provided port is already allocated"))
                p["nodePort"] = np_
                taken.add(np_)
                continue
            free = [n for n in range(lo, hi + 1) if n not in used_ports and n not in taken]
            if not free:
                causes.append(E.invalid_value(f"spec.ports[{i}].nodePort", 0, "range is full"))
                continue
            p["nodePort"] = random.choice(free)
            taken.add(p["nodePort"])
    else:
        for p in spec.get("ports") or []:
            p.pop("nodePort", None)
    return causes
