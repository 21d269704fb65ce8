"""Pictures for the notebooks: what runs where (ASCII, from API objects) and where the CPU goes.

Pure functions of API-shaped dicts (`ApiClient().sanitize_for_serialization(obj)`), so they are tested
without a cluster and draw the same on every provider.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _ready(pod: Mapping[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return f"{sum(1 for s in statuses if s.get('ready'))}/{len(statuses)}"


def _containers(pod: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    spec = pod.get("spec") or {}
    out = []
    for c in spec.get("initContainers") or []:
        kind = "sidecar" if c.get("restartPolicy") == "Always" else "init"
        out.append((kind, c))
    out.extend(("container", c) for c in spec.get("containers") or [])
    return out


def cluster_picture(
    pods: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    endpoints: Iterable[Mapping[str, Any]] = (),
    namespace: str = "default",
) -> str:
    """An ASCII map: each node with its pods and their containers, then each Service with the pods behind it."""
    pods = [p for p in pods if p["metadata"].get("namespace", namespace) == namespace]
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for p in pods:
        by_node.setdefault((p.get("spec") or {}).get("nodeName") or "(not scheduled)", []).append(p)
    ip_to_pod = {(p.get("status") or {}).get("podIP"): p["metadata"]["name"] for p in pods}
    lines: list[str] = []
    for node in sorted(by_node):
        lines.append(f"node {node}")
        node_pods = sorted(by_node[node], key=lambda p: p["metadata"]["name"])
        for i, p in enumerate(node_pods):
            last = i == len(node_pods) - 1
            st = p.get("status") or {}
            lines.append(f"{'└─' if last else '├─'} pod {p['metadata']['name']}  {st.get('podIP') or '-'}"
                         f"  {st.get('phase', '?')}  ready {_ready(p)}")
            conts = _containers(p)
            for j, (kind, c) in enumerate(conts):
                ports = ",".join(str(pt.get("containerPort")) for pt in c.get("ports") or [])
                lines.append(f"{'   ' if last else '│  '}{'└─' if j == len(conts) - 1 else '├─'} {kind} {c['name']}"
                             f"  [{c.get('image', '?')}]{'  :' + ports if ports else ''}")
        lines.append("")
    eps = {e["metadata"]["name"]: e for e in endpoints}
    svcs = sorted((s for s in services if s["metadata"].get("namespace", namespace) == namespace),
                  key=lambda s: s["metadata"]["name"])
    if svcs:
        lines.append("services")
    for s in svcs:
        spec = s.get("spec") or {}
        ports = ", ".join(
            f"{p.get('port')}{'→' + str(p['targetPort']) if p.get('targetPort') not in (None, p.get('port')) else ''}"
            f"{' (node ' + str(p['nodePort']) + ')' if p.get('nodePort') else ''}"
            for p in spec.get("ports") or []
        )
        lines.append(f"  {s['metadata']['name']}  {spec.get('type', 'ClusterIP')} {spec.get('clusterIP', '-')}  :{ports}")
        backends = []
        for subset in (eps.get(s["metadata"]["name"]) or {}).get("subsets") or []:
            for a in subset.get("addresses") or []:
                backends.append(ip_to_pod.get(a.get("ip")) or a.get("ip"))
        if backends:
            lines.append(f"      → {', '.join(sorted(backends))}")
    return "\n".join(lines).rstrip() + "\n"


def cpu_chart(allocatable_m: int, usage: Mapping[str, int], title: str = "CPU requests on the node") -> Figure:
    """A matplotlib Figure: one stacked bar of each pod's effective CPU request against allocatable."""
    import matplotlib.pyplot as plt  # inline in a notebook; headless elsewhere picks Agg by itself

    fig, ax = plt.subplots(figsize=(9, 2.2 + 0.05 * len(usage)))
    left = 0
    for name, cpu in sorted(usage.items(), key=lambda kv: -kv[1]):
        ax.barh(["requests"], [cpu], left=left, edgecolor="white")
        if cpu > allocatable_m * 0.04:
            ax.text(left + cpu / 2, 0, name, ha="center", va="center", fontsize=7, rotation=90)
        left += cpu
    ax.barh(["allocatable"], [allocatable_m], color="#cccccc")
    ax.axvline(allocatable_m, color="red", linestyle="--")
    ax.set_xlabel("millicores")
    ax.set_title(f"{title}: {left}m of {allocatable_m}m requested")
    fig.tight_layout()
    return fig

