"""Pure rules of the ReplicaSet, Job, CronJob and TTL controllers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from minimesh.cluster.local.controllers import cronjob as cj
from minimesh.cluster.local.controllers import job as jb
from minimesh.cluster.local.controllers import replicaset as rsc
from minimesh.cluster.local.controllers import ttl
from minimesh.cluster.local.controllers.objects import fmt_time

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def pod(name: str, *, phase: str = "Running", ready: bool = True, ready_for: float = 3600, labels: dict[str, str] | None = None,
        deleting: bool = False, finished_ago: float | None = None, restarts: int = 0) -> dict[str, Any]:
    p: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": labels or {"app": "x"},
                     "creationTimestamp": fmt_time(NOW - timedelta(hours=2)),
                     "finalizers": [jb.TRACKING_FINALIZER]},
        "spec": {"nodeName": "n1"},
        "status": {"phase": phase,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "lastTransitionTime": fmt_time(NOW - timedelta(seconds=ready_for))}],
                   "containerStatuses": [{"name": "c", "restartCount": restarts, "state": {}}]},
    }
    if deleting:
        p["metadata"]["deletionTimestamp"] = fmt_time(NOW)
    if finished_ago is not None:
        p["status"]["containerStatuses"][0]["state"] = {
            "terminated": {"finishedAt": fmt_time(NOW - timedelta(seconds=finished_ago))}}
    return p


# ---- ReplicaSet --------------------------------------------------------------------------------------


def rs(replicas: int = 3, min_ready: int = 0, generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "ns", "uid": "rs", "generation": generation},
            "spec": {"replicas": replicas, "minReadySeconds": min_ready, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "x", "tier": "web"}}}},
            "status": status or {"replicas": 0}}


def test_replicaset_status_counts() -> None:
    pods = [pod("a", labels={"app": "x", "tier": "web"}), pod("b", ready=False),
            pod("c", ready_for=5, labels={"app": "x", "tier": "web"})]
    st = rsc.calculate_status(rs(min_ready=10), pods, None, NOW)
    assert (st["replicas"], st["fullyLabeledReplicas"], st["readyReplicas"], st["availableReplicas"]) == (3, 2, 2, 1)
    assert rsc.status_changed(rs(), st)
    assert rsc.wire_status({"replicas": 0}, 1) == {"replicas": 0, "observedGeneration": 1}
    # pod c turns available 5 s from now: the ReplicaSet wakes up then
    assert 5 <= rsc.availability_requeue(rs(min_ready=10), pods, NOW) < 5.2


def test_replicaset_failure_condition_comes_and_goes() -> None:
    st = rsc.calculate_status(rs(replicas=3), [pod("a")], 'pods "web-1-x" is forbidden: quota', NOW)
    cond = st["conditions"][0]
    assert (cond["type"], cond["reason"], cond["message"]) == ("ReplicaFailure", "FailedCreate",
                                                              'pods "web-1-x" is forbidden: quota')
    cleared = rsc.calculate_status(rs(replicas=3, status=st), [pod("a")], None, NOW)
    assert "conditions" not in cleared


def test_replicas_diff_is_capped_at_the_burst() -> None:
    assert rsc.replicas_diff(rs(replicas=1000), []) == -500
    assert rsc.replicas_diff(rs(replicas=1), [pod("a"), pod("b")]) == 1


# ---- Job ---------------------------------------------------------------------------------------------


def job(**spec: Any) -> dict[str, Any]:
    return jb.with_defaults({"metadata": {"name": "j", "namespace": "ns", "uid": "job-uid"},
                             "spec": {"template": {"spec": {"restartPolicy": "Never"}}, **spec}})


def test_job_defaults_and_selector() -> None:
    j = job()
    assert (j["spec"]["completions"], j["spec"]["parallelism"], j["spec"]["backoffLimit"]) == (1, 1, 6)
    assert j["spec"]["selector"] == {"matchLabels": {jb.CONTROLLER_UID_LABEL: "job-uid"}}
    work_queue = job(parallelism=3)
    assert work_queue["spec"].get("completions") is None


def test_want_active() -> None:
    assert jb.want_active(job(completions=5, parallelism=2), 0, 0) == 2
    assert jb.want_active(job(completions=5, parallelism=2), 2, 4) == 1
    assert jb.want_active(job(completions=5, parallelism=2), 0, 5) == 0
    wq = job(parallelism=3)
    assert jb.want_active(wq, 1, 0) == 3 and jb.want_active(wq, 1, 1) == 1


def test_failed_pods_include_deleted_unless_only_failed_are_replaced() -> None:
    j = job()
    assert jb.is_pod_failed(pod("a", phase="Failed"), j)
    assert jb.is_pod_failed(pod("a", deleting=True), j)
    assert not jb.is_pod_failed(pod("a", phase="Succeeded", deleting=True), j)
    assert not jb.is_pod_failed(pod("a", deleting=True), job(podReplacementPolicy="Failed"))


def test_backoff_is_exponential_from_the_last_failure_and_reset_by_success() -> None:
    rec = jb.next_backoff(jb.Backoff(), [], [pod("f1", phase="Failed", finished_ago=3)])
    assert rec.failures_after_last_success == 1
    assert jb.backoff_remaining(rec, NOW, 10, 360) == pytest.approx(7)
    rec = jb.next_backoff(rec, [], [pod("f2", phase="Failed", finished_ago=1)])
    assert jb.backoff_remaining(rec, NOW, 10, 360) == pytest.approx(19)  # 20 s after the second failure
    many = jb.Backoff(10, NOW)
    assert jb.backoff_remaining(many, NOW, 10, 360) == 360  # capped
    ok = jb.next_backoff(many, [pod("s", phase="Succeeded", finished_ago=0)], [])
    assert ok.failures_after_last_success == 0 and jb.backoff_remaining(ok, NOW, 10, 360) == 0


def test_past_deadlines() -> None:
    j = job(activeDeadlineSeconds=30)
    j["status"] = {"startTime": fmt_time(NOW - timedelta(seconds=31))}
    assert jb.past_active_deadline(j, NOW)
    j["spec"]["suspend"] = True
    assert not jb.past_active_deadline(j, NOW)
    on_failure = job(backoffLimit=2)
    on_failure["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    assert not jb.past_backoff_limit_on_failure(on_failure, [pod("a", restarts=1)])
    assert jb.past_backoff_limit_on_failure(on_failure, [pod("a", restarts=1), pod("b", restarts=1)])


def test_ensure_condition() -> None:
    conds, changed = jb.ensure_condition([], "Suspended", "False", "JobResumed", "Job resumed", NOW)
    assert conds == [] and not changed  # nothing → False is meaningless
    conds, changed = jb.ensure_condition([], "Suspended", "True", "JobSuspended", "Job suspended", NOW)
    assert changed and conds[0]["status"] == "True" and conds[0]["lastProbeTime"] == fmt_time(NOW)
    conds, changed = jb.ensure_condition(conds, "Suspended", "False", "JobResumed", "Job resumed", NOW)
    assert changed and conds[0]["reason"] == "JobResumed"


def test_job_status_on_the_wire() -> None:
    st = jb.wire_status({"active": 0, "succeeded": 2, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {
        "succeeded": [], "failed": ["u"]}})
    assert st == {"succeeded": 2, "terminating": 0, "uncountedTerminatedPods": {"failed": ["u"]}, "ready": 0}


# ---- CronJob -----------------------------------------------------------------------------------------


def cron(schedule: str, *, created: datetime = NOW - timedelta(hours=1), last: datetime | None = None,
         **spec: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"metadata": {"name": "backup", "namespace": "ns", "uid": "cj",
                                      "creationTimestamp": fmt_time(created)},
                         "spec": {"schedule": schedule, "jobTemplate": {"metadata": {"labels": {"a": "b"}},
                                                                        "spec": {"template": {}}}, **spec},
                         "status": {}}
    if last is not None:
        c["status"]["lastScheduleTime"] = fmt_time(last)
    return c


def test_schedule_parsing() -> None:
    s = cj.parse_schedule("*/5 * * * *", None)
    assert s.next(NOW) == NOW + timedelta(minutes=5)
    assert cj.parse_schedule("@hourly", None).next(NOW) == NOW + timedelta(hours=1)
    assert cj.parse_schedule("@every 90s", None).next(NOW) == NOW + timedelta(seconds=90)
    for bad in ("* * * *", "61 * * * *", "@often", "@every soon"):
        with pytest.raises(cj.ScheduleError):
            cj.parse_schedule(bad, None)


def test_time_zones() -> None:
    s = cj.parse_schedule("0 3 * * *", "Europe/Moscow")  # 03:00 in Moscow is 00:00 UTC
    assert s.next(NOW) == datetime(2024, 5, 2, 0, 0, tzinfo=UTC)
    assert cj.parse_schedule("TZ=Asia/Tokyo 0 9 * * *", None).next(NOW) == datetime(2024, 5, 2, 0, 0, tzinfo=UTC)


def test_most_recent_unmet_schedule() -> None:
    sched = cj.parse_schedule("*/10 * * * *", None)
    # created 1 h ago, never ran: the most recent time is now (12:00); missed several
    t, missed, err = cj.next_schedule_time(cron("*/10 * * * *"), NOW + timedelta(seconds=30), sched)
    assert t == NOW and missed == "few" and err is None
    # ran at 12:00: nothing due until 12:10
    done = cron("*/10 * * * *", last=NOW)
    assert cj.next_schedule_time(done, NOW + timedelta(minutes=5), sched)[0] is None
    assert cj.requeue_after(done, NOW + timedelta(minutes=5), sched) == pytest.approx(300.1)
    # a starting deadline hides what is too old
    late = cron("*/10 * * * *", last=NOW - timedelta(minutes=30), startingDeadlineSeconds=60)
    assert cj.next_schedule_time(late, NOW + timedelta(minutes=5), sched)[0] is None


def test_never_firing_schedule_is_invalid() -> None:
    sched = cj.parse_schedule("0 0 31 2 *", None)
    assert cj.next_schedule_time(cron("0 0 31 2 *"), NOW, sched)[2] is not None


def test_job_from_template() -> None:
    c = cron("*/5 * * * *", timeZone="Europe/Moscow")
    j = cj.job_from_template(c, NOW)
    assert j["metadata"]["name"] == f"backup-{int(NOW.timestamp()) // 60}"
    assert j["metadata"]["labels"] == {"a": "b"}
    assert j["metadata"]["annotations"][cj.SCHEDULED_TIMESTAMP_ANNOTATION] == "2024-05-01T15:00:00+03:00"
    assert j["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert cj.job_from_template(cron("* * * * *"), NOW)["metadata"]["annotations"][
        cj.SCHEDULED_TIMESTAMP_ANNOTATION] == "2024-05-01T12:00:00Z"
    assert ZoneInfo("Europe/Moscow")  # the zone database is present


# ---- TTL after finished --------------------------------------------------------------------------------


def test_ttl_time_left() -> None:
    j = {"metadata": {"name": "j"}, "spec": {"ttlSecondsAfterFinished": 60},
         "status": {"conditions": [{"type": "Complete", "status": "True",
                                    "lastTransitionTime": fmt_time(NOW - timedelta(seconds=50))}]}}
    assert ttl.time_left(j, NOW) == pytest.approx(10)
    j["spec"]["ttlSecondsAfterFinished"] = 0
    assert ttl.time_left(j, NOW) <= 0
    del j["spec"]["ttlSecondsAfterFinished"]
    assert ttl.time_left(j, NOW) is None
