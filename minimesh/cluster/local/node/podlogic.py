"""The kubelet's decisions about one pod, without I/O: what to start or kill next, the crash-loop back-off,
the pod phase, conditions and QoS class.

Follows pkg/kubelet/kuberuntime (computePodActions, with native sidecars: init containers whose
restartPolicy is Always start in order, must be started before the next init container, keep running,
restart whenever they exit, and are stopped after the regular containers of a finishing pod) and
pkg/kubelet/status (getPhase, conditions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minimesh.cluster.local.node import quantity

BACKOFF_BASE = 10.0
BACKOFF_CAP = 300.0


def is_sidecar(container: dict[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


@dataclass(frozen=True)
class CView:
    """What the planner needs to know about one container."""

    name: str
    running: bool = False
    started: bool = False  # running and past its startup probe (if any)
    runs: int = 0  # runs started so far
    last_exit_code: int | None = None  # of the latest finished run
    unhealthy: bool = False  # failed liveness/startup: must be killed (and restarted per policy)
    stopping: bool = False  # a kill is already under way


@dataclass
class Plan:
    start: list[str] = field(default_factory=list)
    kill: list[tuple[str, str]] = field(default_factory=list)  # (container, why)
    init_done: bool = False
    terminal: str | None = None  # Succeeded | Failed when the pod has finished


def should_restart(policy: str, exit_code: int | None) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def initialized(spec: dict[str, Any], views: dict[str, CView]) -> bool:
    """Past the init phase: the kubelet's test is whether any regular container was ever started."""
    return any(views[c["name"]].runs > 0 for c in spec.get("containers") or [])


def plan(spec: dict[str, Any], views: dict[str, CView]) -> Plan:
    policy = spec.get("restartPolicy") or "Always"
    inits = spec.get("initContainers") or []
    regular = spec.get("containers") or []
    p = Plan()

    for c in [*inits, *regular]:
        v = views[c["name"]]
        if v.running and v.unhealthy and not v.stopping:
            p.kill.append((c["name"], "unhealthy"))

    past_init = initialized(spec, views)
    if past_init:
        p.init_done = True
        for c in inits:
            v = views[c["name"]]
            if is_sidecar(c) and not v.running and not v.stopping:
                p.start.append(c["name"])
    else:
        p.init_done = True
        for c in inits:
            v = views[c["name"]]
            if is_sidecar(c):
                if v.running:
                    if v.started and not v.unhealthy:
                        continue
                    p.init_done = False
                    break
                if not v.stopping:
                    p.start.append(c["name"])
                p.init_done = False
                break
            if v.running or v.stopping:
                p.init_done = False
                break
            if v.runs > 0 and v.last_exit_code == 0:
                continue
            p.init_done = False
            if v.runs > 0 and policy == "Never":
                p.terminal = "Failed"
            else:
                p.start.append(c["name"])
            break

    if p.terminal is None and p.init_done:
        for c in regular:
            v = views[c["name"]]
            if v.running or v.stopping:
                continue
            if v.runs == 0 or should_restart(policy, v.last_exit_code):
                p.start.append(c["name"])
        if policy != "Always" and regular and all(
            views[c["name"]].runs > 0 and not views[c["name"]].running and not views[c["name"]].stopping
            and not should_restart(policy, views[c["name"]].last_exit_code)
            for c in regular
        ):
            p.terminal = "Succeeded" if all(views[c["name"]].last_exit_code == 0 for c in regular) else "Failed"

    if p.terminal:
        p.start = []
        # sidecars are stopped after the main containers, last started first
        for c in reversed(inits):
            v = views[c["name"]]
            if is_sidecar(c) and v.running and not v.stopping:
                p.kill.append((c["name"], "pod finished"))
    return p


def phase(spec: dict[str, Any], views: dict[str, CView], terminal: str | None) -> str:
    """getPhase for a pod that is not terminal yet (terminal wins)."""
    if terminal:
        return terminal
    if not initialized(spec, views):
        return "Pending"
    policy = spec.get("restartPolicy") or "Always"
    waiting = running = stopped = succeeded = 0
    for c in spec.get("containers") or []:
        v = views[c["name"]]
        if v.running:
            running += 1
        elif v.runs > 0 and v.last_exit_code is not None:
            stopped += 1
            succeeded += v.last_exit_code == 0
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always" or (policy == "OnFailure" and stopped != succeeded):
            return "Running"
        return "Succeeded" if stopped == succeeded else "Failed"
    return "Pending"


class Backoff:
    """Crash-loop back-off per container (k8s.io/client-go/util/flowcontrol.Backoff, as the kubelet uses it).

    The first restart is immediate; later ones wait base, 2·base, 4·base … up to the cap, counted from
    the moment the container finished. An entry idle for twice the cap starts over.
    """

    def __init__(self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP):
        self.base = base
        self.cap = cap
        self.entries: dict[str, tuple[float, float]] = {}  # key -> (delay, last update)

    def _expired(self, key: str, event_time: float) -> bool:
        entry = self.entries.get(key)
        return entry is None or event_time - entry[1] > 2 * self.cap

    def in_backoff(self, key: str, finished: float, now: float) -> float:
        """Seconds left to wait before restarting (0 when a restart may happen now)."""
        if self._expired(key, finished):
            return 0.0
        delay = self.entries[key][0]
        return max(0.0, finished + delay - now)

    def next(self, key: str, finished: float) -> None:
        if self._expired(key, finished):
            self.entries[key] = (self.base, finished)
        else:
            delay = self.entries[key][0]
            self.entries[key] = (min(delay * 2, self.cap), finished)

    def current(self, key: str) -> float:
        return self.entries.get(key, (self.base, 0))[0]

    def forget_prefix(self, prefix: str) -> None:
        for k in [k for k in self.entries if k.startswith(prefix)]:
            del self.entries[k]


def qos_class(spec: dict[str, Any]) -> str:
    """Guaranteed / Burstable / BestEffort from every container's cpu and memory requests and limits."""
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req = {k: v for k, v in (res.get("requests") or {}).items() if k in ("cpu", "memory")}
        lim = {k: v for k, v in (res.get("limits") or {}).items() if k in ("cpu", "memory")}
        if req or lim:
            any_set = True
        if set(lim) != {"cpu", "memory"}:
            guaranteed = False
            continue
        for k, v in lim.items():
            r = req.get(k, v)  # requests default to limits
            try:
                if quantity.parse(r) != quantity.parse(v):
                    guaranteed = False
            except ValueError:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def condition(type_: str, ok: bool, reason: str = "", message: str = "", *, now: str,
              previous: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A pod condition; keeps lastTransitionTime when the status did not change."""
    status = "True" if ok else "False"
    prev = (previous or {}).get(type_)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == status and prev.get("lastTransitionTime") else now
    out: dict[str, Any] = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out
