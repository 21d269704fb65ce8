"""Defaulting like the real API server (SetDefaults_* of k8s.io/kubernetes/pkg/apis/*/v1 plus the
defaulting admission plugins). Functions mutate the fresh object they are given."""

from __future__ import annotations

import base64
from typing import Any

Obj = dict[str, Any]


def _set(d: Obj, key: str, value: Any) -> None:
    if d.get(key) is None:
        d[key] = value


def image_pull_policy(image: str) -> str:
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(p: Obj | None) -> None:
    if not isinstance(p, dict):
        return
    _set(p, "timeoutSeconds", 1)
    _set(p, "periodSeconds", 10)
    _set(p, "successThreshold", 1)
    _set(p, "failureThreshold", 3)
    if isinstance(p.get("httpGet"), dict):
        _set(p["httpGet"], "scheme", "HTTP")
        _set(p["httpGet"], "path", "/")
    if isinstance(p.get("grpc"), dict):
        _set(p["grpc"], "service", "")


def _env(env: list[Obj] | None) -> None:
    for e in env or []:
        vf = e.get("valueFrom")
        if isinstance(vf, dict) and isinstance(vf.get("fieldRef"), dict):
            _set(vf["fieldRef"], "apiVersion", "v1")


def container(c: Obj) -> None:
    if not isinstance(c, dict):
        return
    _set(c, "terminationMessagePath", "/dev/termination-log")
    _set(c, "terminationMessagePolicy", "File")
    if isinstance(c.get("image"), str) and c["image"]:
        _set(c, "imagePullPolicy", image_pull_policy(c["image"]))
    _set(c, "resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            _set(p, "protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(probe))
    _env(c.get("env"))
    lifecycle = c.get("lifecycle") or {}
    for hook in ("postStart", "preStop"):
        h = lifecycle.get(hook) if isinstance(lifecycle, dict) else None
        if isinstance(h, dict) and isinstance(h.get("httpGet"), dict):
            _set(h["httpGet"], "scheme", "HTTP")
            _set(h["httpGet"], "path", "/")


def _volume(v: Obj) -> None:
    if not isinstance(v, dict):
        return
    sources = {k for k in v if k != "name"}
    if not sources:
        v["emptyDir"] = {}
    for kind in ("configMap", "secret", "downwardAPI", "projected"):
        if isinstance(v.get(kind), dict):
            _set(v[kind], "defaultMode", 420)
    if isinstance(v.get("hostPath"), dict):
        _set(v["hostPath"], "type", "")
    if isinstance(v.get("downwardAPI"), dict):
        for item in v["downwardAPI"].get("items") or []:
            if isinstance(item.get("fieldRef"), dict):
                _set(item["fieldRef"], "apiVersion", "v1")
    if isinstance(v.get("projected"), dict):
        for src in v["projected"].get("sources") or []:
            sat = src.get("serviceAccountToken") if isinstance(src, dict) else None
            if isinstance(sat, dict):
                _set(sat, "expirationSeconds", 3600)
            da = src.get("downwardAPI") if isinstance(src, dict) else None
            if isinstance(da, dict):
                for item in da.get("items") or []:
                    if isinstance(item.get("fieldRef"), dict):
                        _set(item["fieldRef"], "apiVersion", "v1")


def pod_spec(spec: Obj, *, template_of: str = "") -> None:
    """SetDefaults_PodSpec; `template_of` is the owning kind for pod templates ("" for pods)."""
    if not isinstance(spec, dict):
        return
    _set(spec, "dnsPolicy", "ClusterFirst")
    if template_of not in ("Job", "CronJob"):
        _set(spec, "restartPolicy", "Always")
    _set(spec, "securityContext", {})
    _set(spec, "terminationGracePeriodSeconds", 30)
    _set(spec, "schedulerName", "default-scheduler")
    for c in spec.get("containers") or []:
        container(c)
    for c in spec.get("initContainers") or []:
        container(c)
    for c in spec.get("ephemeralContainers") or []:
        if isinstance(c, dict):
            _set(c, "terminationMessagePath", "/dev/termination-log")
            _set(c, "terminationMessagePolicy", "File")
            if c.get("image"):
                _set(c, "imagePullPolicy", image_pull_policy(c["image"]))
    for v in spec.get("volumes") or []:
        _volume(v)
    if spec.get("hostNetwork"):
        for c in spec.get("containers") or []:
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    _set(p, "hostPort", p.get("containerPort"))


def qos_class(spec: Obj) -> str:
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    requests_any = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_any = True
        for r in ("cpu", "memory"):
            lv = lim.get(r)
            rv = req.get(r, lv)
            if lv is None or str(lv) != str(rv):
                guaranteed = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    _set(spec, "enableServiceLinks", True)
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        # requests default to limits (SetDefaults_Pod)
        res = c.get("resources") if isinstance(c, dict) else None
        if isinstance(res, dict) and res.get("limits"):
            req = res.setdefault("requests", {})
            for k, v in res["limits"].items():
                req.setdefault(k, v)


def pod_admission(obj: Obj) -> None:
    """What the default admission chain adds to new pods (ServiceAccount, Priority,
    DefaultTolerationSeconds)."""
    spec = obj.setdefault("spec", {})
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec["serviceAccount"] = sa
    _set(spec, "priority", 0)
    _set(spec, "preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key and t.get("effect") in ("NoExecute", None, "") for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})


def _template(spec: Obj, owner: str) -> None:
    tpl = spec.get("template")
    if isinstance(tpl, dict):
        pod_spec(tpl.setdefault("spec", {}), template_of=owner)
        tpl.setdefault("metadata", {}).setdefault("creationTimestamp", None)


def service(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    _set(spec, "type", "ClusterIP")
    if spec["type"] == "ExternalName":
        return
    _set(spec, "sessionAffinity", "None")
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {})
        _set(cfg, "timeoutSeconds", 10800)
    for p in spec.get("ports") or []:
        if isinstance(p, dict):
            _set(p, "protocol", "TCP")
            if p.get("targetPort") in (None, 0, ""):
                p["targetPort"] = p.get("port")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        _set(spec, "externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        _set(spec, "allocateLoadBalancerNodePorts", True)
    _set(spec, "internalTrafficPolicy", "Cluster")
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    _set(spec, "replicas", 1)
    strategy = spec.setdefault("strategy", {})
    _set(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        _set(ru, "maxUnavailable", "25%")
        _set(ru, "maxSurge", "25%")
    _set(spec, "revisionHistoryLimit", 10)
    _set(spec, "progressDeadlineSeconds", 600)
    _template(spec, "Deployment")


def replicaset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    _set(spec, "replicas", 1)
    _template(spec, "ReplicaSet")


def daemonset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    us = spec.setdefault("updateStrategy", {})
    _set(us, "type", "RollingUpdate")
    if us["type"] == "RollingUpdate":
        ru = us.setdefault("rollingUpdate", {})
        _set(ru, "maxUnavailable", 1)
        _set(ru, "maxSurge", 0)
    _set(spec, "revisionHistoryLimit", 10)
    _template(spec, "DaemonSet")


def statefulset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    _set(spec, "replicas", 1)
    _set(spec, "podManagementPolicy", "OrderedReady")
    us = spec.setdefault("updateStrategy", {})
    _set(us, "type", "RollingUpdate")
    if us["type"] == "RollingUpdate":
        _set(us.setdefault("rollingUpdate", {}), "partition", 0)
    _set(spec, "revisionHistoryLimit", 10)
    pvc = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    _set(pvc, "whenDeleted", "Retain")
    _set(pvc, "whenScaled", "Retain")
    _template(spec, "StatefulSet")


def job_spec(spec: Obj, owner: str = "Job") -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    _set(spec, "parallelism", 1)
    _set(spec, "backoffLimit", 6)
    _set(spec, "completionMode", "NonIndexed")
    _set(spec, "suspend", False)
    _set(spec, "manualSelector", None)
    if spec.get("manualSelector") is None:
        spec.pop("manualSelector", None)
    _set(spec, "podReplacementPolicy", "TerminatingOrFailed")
    _template(spec, owner)


def job(obj: Obj) -> None:
    """Defaults plus the generated selector and labels (batch Job strategy PrepareForCreate)."""
    spec = obj.setdefault("spec", {})
    job_spec(spec)
    if not spec.get("manualSelector"):
        uid = obj["metadata"].get("uid", "")
        name = obj["metadata"].get("name", "")
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {}) or {}
        spec["template"]["metadata"]["labels"] = labels
        labels.setdefault("batch.kubernetes.io/controller-uid", uid)
        labels.setdefault("batch.kubernetes.io/job-name", name)
        labels.setdefault("controller-uid", uid)
        labels.setdefault("job-name", name)


def cronjob(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    _set(spec, "concurrencyPolicy", "Allow")
    _set(spec, "suspend", False)
    _set(spec, "successfulJobsHistoryLimit", 3)
    _set(spec, "failedJobsHistoryLimit", 1)
    jt = spec.get("jobTemplate")
    if isinstance(jt, dict):
        jt.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        _template(jt.setdefault("spec", {}), "CronJob")


def namespace(obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    labels = obj["metadata"].setdefault("labels", {}) or {}
    obj["metadata"]["labels"] = labels
    labels["kubernetes.io/metadata.name"] = name
    spec = obj.setdefault("spec", {})
    if spec.get("finalizers") is None:
        spec["finalizers"] = ["kubernetes"]
    obj.setdefault("status", {}).setdefault("phase", "Active")


def secret(obj: Obj) -> None:
    _set(obj, "type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.get("data") or {}
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data


def crd(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        _set(names, "singular", str(names["kind"]).lower())
        _set(names, "listKind", f"{names['kind']}List")
    _set(spec, "conversion", {"strategy": "None"})


def webhook_config(obj: Obj, mutating: bool) -> None:
    for w in obj.get("webhooks") or []:
        if not isinstance(w, dict):
            continue
        _set(w, "failurePolicy", "Fail")
        _set(w, "matchPolicy", "Equivalent")
        _set(w, "namespaceSelector", {})
        _set(w, "objectSelector", {})
        _set(w, "timeoutSeconds", 10)
        if mutating:
            _set(w, "reinvocationPolicy", "Never")
        svc = (w.get("clientConfig") or {}).get("service")
        if isinstance(svc, dict):
            _set(svc, "port", 443)
        for r in w.get("rules") or []:
            if isinstance(r, dict):
                _set(r, "scope", "*")


def endpointslice(obj: Obj) -> None:
    for p in obj.get("ports") or []:
        if isinstance(p, dict):
            _set(p, "protocol", "TCP")
            _set(p, "name", "")


def endpoints(obj: Obj) -> None:
    for s in obj.get("subsets") or []:
        for p in (s or {}).get("ports") or []:
            if isinstance(p, dict):
                _set(p, "protocol", "TCP")


DEFAULTERS = {
    ("", "Pod"): pod,
    ("", "Service"): service,
    ("", "Namespace"): namespace,
    ("", "Secret"): secret,
    ("", "Endpoints"): endpoints,
    ("apps", "Deployment"): deployment,
    ("apps", "ReplicaSet"): replicaset,
    ("apps", "DaemonSet"): daemonset,
    ("apps", "StatefulSet"): statefulset,
    ("batch", "Job"): lambda o: job_spec(o.setdefault("spec", {})),
    ("batch", "CronJob"): cronjob,
    ("discovery.k8s.io", "EndpointSlice"): endpointslice,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): crd,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): lambda o: webhook_config(o, True),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): lambda o: webhook_config(o, False),
}


def apply(group: str, kind: str, obj: Obj) -> None:
    fn = DEFAULTERS.get((group, kind))
    if fn:
        fn(obj)
