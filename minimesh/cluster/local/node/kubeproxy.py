"""kube-proxy (iptables mode) in the node's network namespace.

Services and EndpointSlices come from informers; any change schedules one sync after a short quiet
period (coalescing bursts), and a sync is a single atomic `iptables-restore --noflush` of every chain
we own. Stopping removes the jumps and the chains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import subprocess
import time
from typing import Any

from minimesh.cluster.local.node import proxy_rules
from minimesh.k8s.aclient import Informer

log = logging.getLogger(__name__)
DEBOUNCE = 0.05
OWNED = re.compile(r"^:(KUBE-(?:SVC|SEP|EXT|SERVICES|NODEPORTS|POSTROUTING|MARK-MASQ|EXTERNAL-SERVICES|FORWARD)[-A-Z0-9]*) ")


class KubeProxy:
    def __init__(self, services: Informer, slices: Informer, *, netns: str | None = None):
        self.services = services
        self.slices = slices
        self.netns = netns  # None: the namespace we run in (the node process); tests pass one
        self.prev_nat: set[str] = set()
        self.prev_filter: set[str] = set()
        self.pending = asyncio.Event()
        self.synced = asyncio.Event()
        self.syncs = 0
        self.last_udp: dict[str, tuple[str, ...]] = {}
        services.add_handler(self._changed)
        slices.add_handler(self._changed)

    def _cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def _run(self, *argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self._cmd(*argv), input=input, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {proc.stderr.strip()}")
        return proc

    async def _changed(self, typ: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.pending.set()

    def existing_chains(self) -> tuple[set[str], set[str]]:
        out = []
        for table in ("nat", "filter"):
            text = self._run("iptables-save", "-t", table, check=False).stdout
            out.append({m.group(1) for line in text.splitlines() if (m := OWNED.match(line))})
        return out[0], out[1]

    def ports(self) -> list[proxy_rules.ServicePort]:
        by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for sl in self.slices.items():
            svc = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
            if svc:
                by_service.setdefault((sl["metadata"]["namespace"], svc), []).append(sl)
        return proxy_rules.service_ports(self.services.items(), by_service)

    def sync(self) -> None:
        t0 = time.monotonic()
        ports = self.ports()
        rules = proxy_rules.render(ports, stale_nat=self.prev_nat, stale_filter=self.prev_filter)
        self._run("iptables-restore", "-w", "--noflush", input=rules.text)
        if not self.syncs:
            self.ensure_jumps()
        self.prev_nat, self.prev_filter = rules.nat_chains, rules.filter_chains
        self.syncs += 1
        self._flush_udp(ports)
        log.debug("kube-proxy sync %d: %d service ports in %.0f ms", self.syncs, len(ports),
                  (time.monotonic() - t0) * 1000)

    def _flush_udp(self, ports: list[proxy_rules.ServicePort]) -> None:
        """UDP has no connection close: drop conntrack entries of services whose endpoints changed."""
        now = {f"{sp.cluster_ip}/{sp.port}": tuple(f"{e.ip}:{e.port}" for e in sp.endpoints)
               for sp in ports if sp.protocol == "UDP"}
        changed = [k for k, v in now.items() if k in self.last_udp and self.last_udp[k] != v]
        self.last_udp = now
        if changed and shutil.which("conntrack"):
            for key in changed:
                self._run("conntrack", "-D", "-p", "udp", "--orig-dst", key.split("/")[0], check=False)

    def ensure_jumps(self) -> None:
        for table, chain, rule in proxy_rules.JUMPS:
            if self._run("iptables", "-w", "-t", table, "-C", chain, *rule, check=False).returncode != 0:
                self._run("iptables", "-w", "-t", table, "-I", chain, "1", *rule)

    def cleanup(self) -> None:
        """Remove the jumps and every chain we own (kube-proxy --cleanup)."""
        for table, chain, rule in proxy_rules.JUMPS:
            while self._run("iptables", "-w", "-t", table, "-D", chain, *rule, check=False).returncode == 0:
                pass
        nat, filt = self.existing_chains()
        for table, chains in (("nat", nat), ("filter", filt)):
            if not chains:
                continue
            text = f"*{table}\n" + "".join(f":{c} - [0:0]\n" for c in sorted(chains))
            text += "".join(f"-X {c}\n" for c in sorted(chains)) + "COMMIT\n"
            self._run("iptables-restore", "-w", "--noflush", input=text, check=False)

    async def run(self) -> None:
        await asyncio.gather(self.services.synced.wait(), self.slices.synced.wait())
        self.prev_nat, self.prev_filter = await asyncio.to_thread(self.existing_chains)
        self.pending.set()
        while True:
            await self.pending.wait()
            await asyncio.sleep(DEBOUNCE)  # let a burst of changes settle into one restore
            self.pending.clear()
            try:
                await asyncio.to_thread(self.sync)
                self.synced.set()
            except Exception as e:
                log.error("kube-proxy sync failed: %s", e)
                await asyncio.sleep(1)
                self.pending.set()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.cleanup)
