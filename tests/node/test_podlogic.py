"""The kubelet's pure decisions: what to start/kill next, phase, back-off, QoS."""

from __future__ import annotations

from minimesh.cluster.local.node.podlogic import Backoff, CView, initialized, phase, plan, qos_class


def spec(inits=(), containers=("app",), policy="Always", sidecars=()):
    return {
        "restartPolicy": policy,
        "initContainers": [{"name": n, **({"restartPolicy": "Always"} if n in sidecars else {})} for n in inits],
        "containers": [{"name": n} for n in containers],
    }


def views(s, **kw):
    names = [c["name"] for c in [*s["initContainers"], *s["containers"]]]
    return {n: kw.get(n, CView(n)) for n in names}


def test_init_containers_run_one_at_a_time_in_order() -> None:
    s = spec(inits=("a", "b"))
    p = plan(s, views(s))
    assert p.start == ["a"] and not p.init_done
    p = plan(s, views(s, a=CView("a", running=True, runs=1)))
    assert p.start == [] and not p.init_done
    p = plan(s, views(s, a=CView("a", runs=1, last_exit_code=0)))
    assert p.start == ["b"]
    p = plan(s, views(s, a=CView("a", runs=1, last_exit_code=0), b=CView("b", runs=1, last_exit_code=0)))
    assert p.init_done and p.start == ["app"]


def test_failed_init_restarts_unless_never() -> None:
    s = spec(inits=("a",))
    failed = CView("a", runs=1, last_exit_code=1)
    assert plan(s, views(s, a=failed)).start == ["a"]
    s = spec(inits=("a",), policy="Never")
    p = plan(s, views(s, a=failed))
    assert p.terminal == "Failed" and p.start == []


def test_native_sidecar_must_be_started_before_next_init_and_keeps_running() -> None:
    s = spec(inits=("proxy", "setup"), sidecars=("proxy",))
    p = plan(s, views(s))
    assert p.start == ["proxy"]
    running_not_started = CView("proxy", running=True, runs=1, started=False)
    assert plan(s, views(s, proxy=running_not_started)).start == []
    started = CView("proxy", running=True, runs=1, started=True)
    assert plan(s, views(s, proxy=started)).start == ["setup"]
    done = CView("setup", runs=1, last_exit_code=0)
    p = plan(s, views(s, proxy=started, setup=done))
    assert p.init_done and p.start == ["app"]


def test_sidecar_restarts_after_init_and_pod_completion_stops_it() -> None:
    s = spec(inits=("proxy",), sidecars=("proxy",), policy="Never")
    crashed = CView("proxy", runs=1, last_exit_code=137)
    app_running = CView("app", running=True, runs=1)
    p = plan(s, views(s, proxy=crashed, app=app_running))
    assert p.start == ["proxy"]  # restarted although the pod's policy is Never
    sidecar = CView("proxy", running=True, started=True, runs=1)
    p = plan(s, views(s, proxy=sidecar, app=CView("app", runs=1, last_exit_code=0)))
    assert p.terminal == "Succeeded" and p.kill == [("proxy", "pod finished")] and p.start == []


def test_restart_policies() -> None:
    for policy, code, restart in [("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False),
                                  ("OnFailure", 2, True), ("Never", 1, False)]:
        s = spec(policy=policy)
        p = plan(s, views(s, app=CView("app", runs=1, last_exit_code=code)))
        assert (p.start == ["app"]) is restart, (policy, code)
        if not restart:
            assert p.terminal == ("Succeeded" if code == 0 else "Failed")


def test_unhealthy_container_is_killed_once() -> None:
    s = spec()
    p = plan(s, views(s, app=CView("app", running=True, runs=1, unhealthy=True)))
    assert p.kill == [("app", "unhealthy")]
    p = plan(s, views(s, app=CView("app", running=True, runs=1, unhealthy=True, stopping=True)))
    assert p.kill == []


def test_phase() -> None:
    s = spec(inits=("a",))
    assert phase(s, views(s), None) == "Pending"
    s = spec(containers=("x", "y"))
    v = views(s, x=CView("x", running=True, runs=1))
    assert phase(s, v, None) == "Pending"  # y has not started yet
    v = views(s, x=CView("x", running=True, runs=1), y=CView("y", runs=1, last_exit_code=1))
    assert phase(s, v, None) == "Running"
    s = spec(policy="OnFailure")
    assert phase(s, views(s, app=CView("app", runs=1, last_exit_code=0)), None) == "Succeeded"
    assert phase(s, views(s, app=CView("app", runs=2, last_exit_code=1)), None) == "Running"
    assert initialized(s, views(s, app=CView("app", runs=1))) is True


def test_backoff_matches_the_kubelet_sequence() -> None:
    b = Backoff(10, 300)
    # first crash at t=0: no back-off, restart now
    assert b.in_backoff("k", 0, 0) == 0
    b.next("k", 0)
    # second crash at t=5: wait 10 s from then
    assert b.in_backoff("k", 5, 6) == 9
    assert b.in_backoff("k", 5, 15) == 0
    b.next("k", 5)
    assert b.current("k") == 20
    for t in range(6):
        b.next("k", 100 + t)
    assert b.current("k") == 300  # capped
    assert b.in_backoff("k", 1000, 1000) == 0  # idle for more than twice the cap: starts over


def test_qos_class() -> None:
    assert qos_class({"containers": [{"name": "a"}]}) == "BestEffort"
    g = {"limits": {"cpu": "100m", "memory": "64Mi"}}
    assert qos_class({"containers": [{"name": "a", "resources": g}]}) == "Guaranteed"
    b = {"requests": {"cpu": "100m"}}
    assert qos_class({"containers": [{"name": "a", "resources": g}, {"name": "b", "resources": b}]}) == "Burstable"
    assert qos_class({"containers": [{"name": "a", "resources": {"requests": {"cpu": "0.1", "memory": "64Mi"},
                                                                  "limits": {"cpu": "100m", "memory": "64Mi"}}}]}) == "Guaranteed"


def test_probe_thresholds() -> None:
    from minimesh.cluster.local.node.probes import ProbeSpec, ProbeState

    startup = ProbeState(ProbeSpec("startup", {"failureThreshold": 2}))
    assert startup.result is None
    assert not startup.observe(False) and startup.result is None
    assert startup.observe(False) and startup.result is False  # -> the kubelet kills the container
    ready = ProbeState(ProbeSpec("readiness", {"successThreshold": 2, "failureThreshold": 1}))
    assert ready.result is False
    assert not ready.observe(True)
    assert ready.observe(True) and ready.result is True
    assert ready.observe(False) and ready.result is False
    live = ProbeState(ProbeSpec("liveness", {}))
    assert live.result is True
    assert not live.observe(False) and not live.observe(False)
    assert live.observe(False) and live.result is False  # default failureThreshold 3
