"""What `cluster down` needs from the node beyond deleting namespaces and the state dir.

Deleting the cluster's network namespaces kills every container (each lives in its pod's netns or,
for hostNetwork pods, the node's) and the iptables rules with them; the per-container cgroups are the
one thing left in the host, so they are removed here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from minimesh.cluster.local.layout import existing_clusters
from minimesh.cluster.local.node.cgroups import CgroupManager


def cleanup_cluster(name: str) -> list[str]:
    """Kill whatever is still in the cluster's cgroups and remove them. Returns what was removed."""
    cg = CgroupManager(name)
    pods = sorted(cg.pods())
    for _ in range(40):
        pids = {int(p) for root in cg.roots.values() for f in root.glob("pod*/*/cgroup.procs")
                for p in f.read_text().split()}
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    cg.remove_all()
    cg.sweep_stale({c for c in existing_clusters() if c != name})
    return [f"cgroups of pod {uid}" for uid in pods]
