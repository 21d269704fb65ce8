"""Jobs, CronJobs and TTL-after-finished against a real API server (kubectl wait included)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from mm_controllers_support import Env, FakeKubelet, kubectl, wait_for

from minimesh.cluster.local.controllers.job import TRACKING_FINALIZER


def job(name: str = "j", fate_label: str = "ok", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {"fate": fate_label}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "busybox"}]}}, **spec}}


def conditions(env: Env, ns: str, name: str) -> list[tuple[str, str, str]]:
    j = env.batch.read_namespaced_job(name, ns)
    return [(c.type, c.status, c.reason or "") for c in j.status.conditions or []]


def fate_from_label(p: Any) -> str | None:
    return {"ok": "succeed", "bad": "fail", "slow": "running"}.get(p.metadata.labels.get("fate", ""))


def test_job_completes_and_kubectl_wait_sees_it(env: Env) -> None:
    ns = env.namespace("job")
    with FakeKubelet(env, ns, fate=fate_from_label):
        env.batch.create_namespaced_job(ns, job())
        out = kubectl(env, "-n", ns, "wait", "--for=condition=complete", "job/j", "--timeout=30s")
        assert out.returncode == 0, out.stderr
    j = env.batch.read_namespaced_job("j", ns)
    assert j.status.succeeded == 1 and not j.status.failed and not j.status.active
    assert j.status.start_time is not None and j.status.completion_time is not None
    assert j.status.ready == 0 and j.status.terminating == 0
    assert conditions(env, ns, "j") == [("SuccessCriteriaMet", "True", "CompletionsReached"),
                                        ("Complete", "True", "CompletionsReached")]
    [pod] = env.pods(ns)
    assert pod.metadata.generate_name == "j-"
    assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "j"
    assert TRACKING_FINALIZER not in (pod.metadata.finalizers or [])  # counted, then released
    reasons = [e.reason for e in env.core.list_namespaced_event(ns, field_selector="involvedObject.kind=Job").items]
    assert "SuccessfulCreate" in reasons and "Completed" in reasons


def test_parallelism_and_completions(env: Env) -> None:
    ns = env.namespace("par")
    most_active = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most_active
        while not stop.is_set():
            running = [p for p in env.pods(ns) if p.status.phase in ("Pending", "Running")]
            most_active = max(most_active, len(running))
            stop.wait(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    with FakeKubelet(env, ns, fate=fate_from_label):
        env.batch.create_namespaced_job(ns, job(completions=5, parallelism=2))
        out = kubectl(env, "-n", ns, "wait", "--for=condition=complete", "job/j", "--timeout=60s")
        assert out.returncode == 0, out.stderr
    stop.set()
    t.join()
    j = env.batch.read_namespaced_job("j", ns)
    assert j.status.succeeded == 5
    assert len(env.pods(ns)) == 5
    assert most_active <= 2


def test_failed_pods_back_off_then_backoff_limit_fails_the_job(env: Env) -> None:
    ns = env.namespace("fail")
    with FakeKubelet(env, ns, fate=fate_from_label):
        env.batch.create_namespaced_job(ns, job(fate_label="bad", backoffLimit=2))
        out = kubectl(env, "-n", ns, "wait", "--for=condition=failed", "job/j", "--timeout=60s")
        assert out.returncode == 0, out.stderr
    j = env.batch.read_namespaced_job("j", ns)
    assert j.status.failed == 3 and not j.status.succeeded
    assert conditions(env, ns, "j") == [("FailureTarget", "True", "BackoffLimitExceeded"),
                                        ("Failed", "True", "BackoffLimitExceeded")]
    assert j.status.completion_time is None
    # the replacements waited for the back-off (0.2 s, then 0.4 s in this test's options)
    starts = sorted(p.metadata.creation_timestamp for p in env.pods(ns))
    assert len(starts) == 3
    events = env.core.list_namespaced_event(ns, field_selector="involvedObject.kind=Job").items
    warning = [e for e in events if e.reason == "BackoffLimitExceeded"]
    assert warning and warning[0].type == "Warning" and warning[0].message == "Job has reached the specified backoff limit"


def test_on_failure_container_restarts_count_against_the_backoff_limit(env: Env) -> None:
    ns = env.namespace("onfail")
    spec = job(fate_label="slow", backoffLimit=3)
    spec["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    with FakeKubelet(env, ns, fate=fate_from_label):
        env.batch.create_namespaced_job(ns, spec)
        [pod] = wait_for("pod running", lambda: [p for p in env.pods(ns) if p.status.phase == "Running"])
        env.set_pod_status(ns, pod.metadata.name, ready=False, restarts=2)  # the kubelet restarted it in place
        time_left = kubectl(env, "-n", ns, "wait", "--for=condition=failed", "job/j", "--timeout=3s")
        assert time_left.returncode != 0  # 2 restarts < 3: still running
        env.set_pod_status(ns, pod.metadata.name, ready=False, restarts=3)
        out = kubectl(env, "-n", ns, "wait", "--for=condition=failed", "job/j", "--timeout=30s")
        assert out.returncode == 0, out.stderr
    assert ("Failed", "True", "BackoffLimitExceeded") in conditions(env, ns, "j")
    wait_for("pod deleted", lambda: not env.pods(ns))


def test_active_deadline_stops_running_pods(env: Env) -> None:
    ns = env.namespace("deadline")
    with FakeKubelet(env, ns, fate=fate_from_label):
        env.batch.create_namespaced_job(ns, job(fate_label="slow", activeDeadlineSeconds=1))
        out = kubectl(env, "-n", ns, "wait", "--for=condition=failed", "job/j", "--timeout=30s")
        assert out.returncode == 0, out.stderr
    assert ("Failed", "True", "DeadlineExceeded") in conditions(env, ns, "j")
    wait_for("pods deleted", lambda: not env.pods(ns))


def test_ttl_after_finished_deletes_the_job_and_its_pods(env: Env) -> None:
    ns = env.namespace("ttl")
    with FakeKubelet(env, ns, fate=fate_from_label):
        env.batch.create_namespaced_job(ns, job(ttlSecondsAfterFinished=1))

        def gone() -> bool:
            try:
                env.batch.read_namespaced_job("j", ns)
            except client.ApiException as e:
                return e.status == 404
            return False
        wait_for("job deleted by its TTL", gone, timeout=30)
        wait_for("pods gone", lambda: not env.pods(ns))


def test_suspended_job_creates_nothing_until_resumed(env: Env) -> None:
    ns = env.namespace("suspend")
    with FakeKubelet(env, ns, fate=fate_from_label):
        env.batch.create_namespaced_job(ns, job(suspend=True))
        wait_for("Suspended condition", lambda: ("Suspended", "True", "JobSuspended") in conditions(env, ns, "j"))
        assert not env.pods(ns)
        assert env.batch.read_namespaced_job("j", ns).status.start_time is None
        env.batch.patch_namespaced_job("j", ns, {"spec": {"suspend": False}})
        assert kubectl(env, "-n", ns, "wait", "--for=condition=complete", "job/j", "--timeout=30s").returncode == 0
    assert ("Suspended", "False", "JobResumed") in conditions(env, ns, "j")


def test_cronjob_runs_on_schedule_with_history_limits(env: Env) -> None:
    """Job names have minute resolution, so instead of waiting minutes the test moves the CronJob
    controller's clock forward one minute at a time."""
    ns = env.namespace("cron")
    controller = env.manager.controller("cronjob-controller")
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
            "spec": {"schedule": "* * * * *", "successfulJobsHistoryLimit": 2, "concurrencyPolicy": "Forbid",
                     "jobTemplate": {"metadata": {"labels": {"made-by": "cron"}}, "spec": job()["spec"]}}}
    offset = [timedelta(0)]
    try:
        with FakeKubelet(env, ns, fate=fate_from_label):
            env.batch.create_namespaced_cron_job(ns, cron)
            # a frozen clock, read after the creation: a step never straddles a real minute boundary
            base = datetime.now(UTC)
            controller.clock = lambda: base + offset[0]
            names = []
            for minute in range(1, 5):
                offset[0] = timedelta(minutes=minute)
                controller.queue.add(f"{ns}/tick")
                want = f"tick-{int((base + offset[0]).timestamp()) // 60}"
                wait_for(f"job {want}", lambda w=want: w in {j.metadata.name for j in env.batch.list_namespaced_job(ns).items})
                names.append(want)
                wait_for(f"{want} complete", lambda w=want: ("Complete", "True", "CompletionsReached")
                         in conditions(env, ns, w), timeout=20)
                wait_for("cronjob saw it", lambda: not env.batch.read_namespaced_cron_job("tick", ns).status.active)
            wait_for("history trimmed to 2", lambda: sorted(j.metadata.name for j in env.batch.list_namespaced_job(ns).items)
                     == names[-2:])
            cj = env.batch.read_namespaced_cron_job("tick", ns)
            assert cj.status.last_schedule_time is not None and cj.status.last_successful_time is not None
            for j in env.batch.list_namespaced_job(ns).items:
                assert j.metadata.owner_references[0].kind == "CronJob"
                assert j.metadata.labels["made-by"] == "cron"
                assert "batch.kubernetes.io/cronjob-scheduled-timestamp" in j.metadata.annotations
            reasons = {e.reason for e in env.core.list_namespaced_event(ns, field_selector="involvedObject.name=tick").items}
            assert {"SuccessfulCreate", "SawCompletedJob", "SuccessfulDelete"} <= reasons
            # Forbid: while a run is still active, the next one is skipped
            env.batch.patch_namespaced_cron_job("tick", ns, {"spec": {"jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"fate": "slow"}}}}}}})
            offset[0] = timedelta(minutes=5)
            controller.queue.add(f"{ns}/tick")
            wait_for("a slow run", lambda: env.batch.read_namespaced_cron_job("tick", ns).status.active)
            offset[0] = timedelta(minutes=6)
            controller.queue.add(f"{ns}/tick")
            wait_for("JobAlreadyActive", lambda: "JobAlreadyActive" in {
                e.reason for e in env.core.list_namespaced_event(ns, field_selector="involvedObject.name=tick").items})
            assert len(env.batch.read_namespaced_cron_job("tick", ns).status.active) == 1
    finally:
        controller.clock = controller.ctx.clock


def test_deleting_a_running_job_releases_and_removes_its_pods(env: Env) -> None:
    ns = env.namespace("jdel")
    with FakeKubelet(env, ns, fate=fate_from_label):
        env.batch.create_namespaced_job(ns, job(fate_label="slow", parallelism=2, completions=2))
        pods = wait_for("running pods", lambda: len([p for p in env.pods(ns) if p.status.phase == "Running"]) == 2
                        and env.pods(ns))
        assert all(TRACKING_FINALIZER in (p.metadata.finalizers or []) for p in pods)
        env.batch.delete_namespaced_job("j", ns, propagation_policy="Background")
        wait_for("pods gone (finalizers removed by the job controller)", lambda: not env.pods(ns), timeout=30)
