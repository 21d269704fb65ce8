"""The layout of one local cluster: names, addresses, ports and files.

This is the contract shared by the lifecycle (up/down), the control plane process (API server,
controllers, scheduler) and the node process (kubelet, kube-proxy, DNS). It holds no I/O beyond
reading/writing `cluster.json`, so every component derives the same names from the same record.

Network picture (one cluster)::

    host netns                          node netns  mm-<name>_node               pod netns  mm-<name>_p<id>
    127.0.0.1:<api_port>  (kubectl)     198.18.X.2/30 <-veth-> host 198.18.X.1    eth0 10.244.0.N/32
    198.18.X.1:<api_port> (from pods)   kubelet :10250, DNS :53, kube-proxy NAT   default via 10.244.0.1
                                         routes 10.244.0.N/32 -> vethXXXX (proxy_arp)

Namespace names use '_' after the cluster name ('_' is not allowed in names), so no cluster's prefix
matches another cluster's namespaces. Pod and service CIDRs exist only inside the cluster's own namespaces; the host only has the /30 link
(198.18.0.0/15 is the RFC 2544 benchmarking range, never routed on real networks), so any number of
clusters run side by side.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minimesh.paths import state_root

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
LINK_NET = ipaddress.IPv4Network("198.18.0.0/15")
POD_CIDR = "10.244.0.0/16"
NODE_POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/12"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250
DNS_PORT = 53
NODE_PORT_RANGE = (30000, 32767)
KUBERNETES_VERSION = "v1.32.0"


class LayoutError(ValueError):
    pass


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise LayoutError(
            f"cluster name {name!r} is not valid: use 1-15 characters, lowercase letters, digits and '-',"
            " starting with a letter (it becomes part of namespace and interface names)"
        )
    return name


@dataclass
class ClusterLayout:
    name: str
    index: int  # selects the /30 link inside 198.18.0.0/15; unique among live clusters
    api_port: int
    source_root: str  # the minimesh tree whose code the minimesh image runs
    node_name: str = "minimesh-control-plane"
    extra_mounts: list[dict[str, str]] = field(default_factory=list)  # like kind's extraMounts
    crash_loop_backoff_seconds: float | None = None  # kubelet's CrashLoopBackOff base (10 s); tests shorten it

    # ---- derived names -------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return state_root() / "clusters" / self.name

    @property
    def node_netns(self) -> str:
        return f"mm-{self.name}_node"

    @property
    def pod_netns_prefix(self) -> str:
        return f"mm-{self.name}_p"

    def pod_netns(self, pod_uid: str) -> str:
        return f"{self.pod_netns_prefix}{pod_uid.replace('-', '')[:12]}"

    @property
    def host_veth(self) -> str:
        return f"mmh{self.index}"  # at most 3+5 chars, within IFNAMSIZ

    @property
    def node_veth(self) -> str:
        return "eth0"  # inside the node netns

    @property
    def host_ip(self) -> str:
        return str(LINK_NET.network_address + 4 * self.index + 1)

    @property
    def node_ip(self) -> str:
        return str(LINK_NET.network_address + 4 * self.index + 2)

    @property
    def api_server_url(self) -> str:
        """From the host (kubectl, tests, notebooks)."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def api_server_url_from_node(self) -> str:
        """From the node netns and pods (through the host veth; kubernetes.default.svc DNATs here)."""
        return f"https://{self.host_ip}:{self.api_port}"

    # ---- files ----------------------------------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "etcd.sqlite3"

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def pidfile(self, component: str) -> Path:
        return self.state_dir / f"{component}.pid"

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.record_path)

    @classmethod
    def load(cls, name: str) -> ClusterLayout:
        validate_name(name)
        path = state_root() / "clusters" / name / "cluster.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LayoutError(f"no local cluster named {name!r} (run: minimesh cluster up --name {name})") from None
        return cls(**data)


def existing_clusters() -> list[str]:
    base = state_root() / "clusters"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "cluster.json").exists())


def free_index() -> int:
    used = set()
    for name in existing_clusters():
        try:
            used.add(ClusterLayout.load(name).index)
        except (LayoutError, TypeError, ValueError):
            continue
    for i in range(1, LINK_NET.num_addresses // 4):
        if i not in used:
            return i
    raise LayoutError("no free link subnet left in 198.18.0.0/15")
