"""The per-pod /etc/hosts, /etc/resolv.conf and /etc/hostname, as the kubelet writes them (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minimesh.cluster.local.layout import CLUSTER_DOMAIN, DNS_SERVICE_IP

MAX_HOSTNAME = 63


@dataclass(frozen=True)
class PodFiles:
    hostname: str
    hosts: str
    resolv_conf: str


def pod_hostname(pod: dict[str, Any]) -> tuple[str, str]:
    """(hostname, fqdn or "") — spec.hostname or the pod name (cut to 63), FQDN when spec.subdomain is set."""
    spec = pod.get("spec", {})
    name = (spec.get("hostname") or pod["metadata"]["name"])[:MAX_HOSTNAME].rstrip("-.")
    fqdn = ""
    if spec.get("subdomain"):
        fqdn = f"{name}.{spec['subdomain']}.{pod['metadata']['namespace']}.svc.{CLUSTER_DOMAIN}"
    return name, fqdn


def hosts_file(pod: dict[str, Any], pod_ip: str, node_hosts: str = "") -> str:
    spec = pod.get("spec", {})
    if spec.get("hostNetwork"):
        out = node_hosts if node_hosts.endswith("\n") or not node_hosts else node_hosts + "\n"
    else:
        name, fqdn = pod_hostname(pod)
        out = (
            "# Kubernetes-managed hosts file.\n"
            "127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\n"
            "fe00::0\tip6-mcastprefix\n"
            "fe00::1\tip6-allnodes\n"
            "fe00::2\tip6-allrouters\n"
        )
        out += f"{pod_ip}\t{fqdn}\t{name}\n" if fqdn else f"{pod_ip}\t{name}\n"
    aliases = spec.get("hostAliases") or []
    if aliases:
        out += "\n# Entries added by HostAliases.\n"
        for a in aliases:
            out += f"{a['ip']}\t" + "\t".join(a.get("hostnames") or []) + "\n"
    return out


def _parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    ns, search, opts = [], [], []
    for line in text.splitlines():
        f = line.split()
        if not f or f[0].startswith(("#", ";")):
            continue
        if f[0] == "nameserver" and len(f) > 1:
            ns.append(f[1])
        elif f[0] in ("search", "domain"):
            search = f[1:]
        elif f[0] == "options":
            opts += f[1:]
    return ns, search, opts


def _merge_options(base: list[str], extra: list[dict[str, Any]]) -> list[str]:
    merged: dict[str, str] = {}
    for o in base:
        merged[o.partition(":")[0]] = o
    for o in extra:
        merged[o["name"]] = f"{o['name']}:{o['value']}" if o.get("value") not in (None, "") else o["name"]
    return list(merged.values())


def resolv_conf(pod: dict[str, Any], node_resolv: str = "") -> str:
    """dnsPolicy ClusterFirst (default), ClusterFirstWithHostNet, Default, None, merged with spec.dnsConfig."""
    spec = pod.get("spec", {})
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    ns_name = pod["metadata"]["namespace"]
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        nameservers = [DNS_SERVICE_IP]
        search = [f"{ns_name}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        options = ["ndots:5"]
    elif policy == "Default":
        nameservers, search, options = _parse_resolv(node_resolv)
    elif policy == "None":
        nameservers, search, options = [], [], []
    else:
        raise ValueError(f"spec.dnsPolicy: unsupported value {policy!r}")
    cfg = spec.get("dnsConfig") or {}
    nameservers = [*nameservers, *(n for n in cfg.get("nameservers") or [] if n not in nameservers)][:3]
    search = [*search, *(s for s in cfg.get("searches") or [] if s not in search)][:32]
    options = _merge_options(options, cfg.get("options") or [])
    lines = []
    if search:
        lines.append("search " + " ".join(search))
    lines += [f"nameserver {n}" for n in nameservers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def pod_files(pod: dict[str, Any], pod_ip: str, *, node_name: str = "", node_hosts: str = "",
              node_resolv: str = "") -> PodFiles:
    name, fqdn = pod_hostname(pod)
    if pod.get("spec", {}).get("setHostnameAsFQDN") and fqdn:
        name = fqdn
    if pod.get("spec", {}).get("hostNetwork") and node_name:
        name = node_name  # a hostNetwork pod shares the node's UTS identity
    return PodFiles(hostname=name + "\n", hosts=hosts_file(pod, pod_ip, node_hosts), resolv_conf=resolv_conf(pod, node_resolv))
