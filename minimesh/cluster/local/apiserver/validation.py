"""Semantic validation of built-in kinds: the checks that matter, with the real API server's field
paths and messages (k8s.io/kubernetes/pkg/apis/*/validation). Pure: object(s) in, causes out."""

from __future__ import annotations

import copy
import re
from typing import Any

from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.apiserver import meta as M
from minimesh.k8s import selectors

Obj = dict[str, Any]

RESTART_POLICIES = ["Always", "OnFailure", "Never"]
DNS_POLICIES = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)

# Which name rule each kind's metadata.name follows (default: DNS-1123 subdomain).
NAME_RULES = {
    ("", "Namespace"): "label",
    ("", "Service"): "dns1035",
    ("rbac.authorization.k8s.io", "Role"): "path",
    ("rbac.authorization.k8s.io", "ClusterRole"): "path",
    ("rbac.authorization.k8s.io", "RoleBinding"): "path",
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): "path",
    ("", "Event"): "path",
    ("events.k8s.io", "Event"): "path",
}


def _port_number(value: Any, path: str, c: E.Causes) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        c.add(E.invalid_value(path, value, "must be between 1 and 65535, inclusive"))


def _port_name(value: str, path: str, c: E.Causes) -> None:
    if len(value) > 15:
        c.add(E.invalid_value(path, value, "must be no more than 15 characters"))
    if not IANA_SVC_NAME.match(value) or "--" in value or not re.search("[a-z]", value):
        c.add(E.invalid_value(path, value, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
                              if not IANA_SVC_NAME.match(value) else "must contain at least one letter (a-z)"))


def _container(ct: Obj, path: str, volumes: set[str], c: E.Causes, names: set[str], *, init: bool) -> None:
    name = ct.get("name")
    if not name:
        c.add(E.required(f"{path}.name"))
    else:
        for m in M.is_label(name):
            c.add(E.invalid_value(f"{path}.name", name, m))
        if name in names:
            c.add(E.duplicate(f"{path}.name", name))
        names.add(name)
    if not ct.get("image"):
        c.add(E.required(f"{path}.image"))
    ipp = ct.get("imagePullPolicy")
    if ipp is not None and ipp not in PULL_POLICIES:
        c.add(E.not_supported(f"{path}.imagePullPolicy", ipp, PULL_POLICIES))
    port_names: set[str] = set()
    for i, p in enumerate(ct.get("ports") or []):
        pp = f"{path}.ports[{i}]"
        _port_number(p.get("containerPort"), f"{pp}.containerPort", c)
        if p.get("hostPort") not in (None, 0):
            _port_number(p.get("hostPort"), f"{pp}.hostPort", c)
        proto = p.get("protocol")
        if proto is not None and proto not in PROTOCOLS:
            c.add(E.not_supported(f"{pp}.protocol", proto, PROTOCOLS))
        pn = p.get("name")
        if pn:
            _port_name(pn, f"{pp}.name", c)
            if pn in port_names:
                c.add(E.duplicate(f"{pp}.name", pn))
            port_names.add(pn)
    for i, vm in enumerate(ct.get("volumeMounts") or []):
        vp = f"{path}.volumeMounts[{i}]"
        if not vm.get("name"):
            c.add(E.required(f"{vp}.name"))
        elif vm["name"] not in volumes:
            c.add(E.Cause("FieldValueNotFound", f"Not found: {E.go_repr(vm['name'])}", f"{vp}.name"))
        if not vm.get("mountPath"):
            c.add(E.required(f"{vp}.mountPath"))
    env_names = set()
    for i, e in enumerate(ct.get("env") or []):
        if not e.get("name"):
            c.add(E.required(f"{path}.env[{i}].name"))
        env_names.add(e.get("name"))
    rp = ct.get("restartPolicy")
    if rp is not None:
        if not init:
            c.add(E.forbidden_field(f"{path}.restartPolicy", "may not be set for non-init containers"))
        elif rp != "Always":
            c.add(E.not_supported(f"{path}.restartPolicy", rp, ["Always"]))


def pod_spec(spec: Any, path: str, c: E.Causes, *, restart_policies: list[str] | None = None) -> None:
    if not isinstance(spec, dict):
        c.add(E.required(path))
        return
    volumes: set[str] = set()
    for i, v in enumerate(spec.get("volumes") or []):
        vn = v.get("name")
        if not vn:
            c.add(E.required(f"{path}.volumes[{i}].name"))
            continue
        for m in M.is_label(vn):
            c.add(E.invalid_value(f"{path}.volumes[{i}].name", vn, m))
        if vn in volumes:
            c.add(E.duplicate(f"{path}.volumes[{i}].name", vn))
        volumes.add(vn)
    containers = spec.get("containers")
    if not containers:
        c.add(E.required(f"{path}.containers"))
    names: set[str] = set()
    for i, ct in enumerate(spec.get("initContainers") or []):
        _container(ct, f"{path}.initContainers[{i}]", volumes, c, names, init=True)
    for i, ct in enumerate(containers or []):
        _container(ct, f"{path}.containers[{i}]", volumes, c, names, init=False)
    rp = spec.get("restartPolicy")
    allowed = restart_policies or RESTART_POLICIES
    if rp is None and restart_policies:
        c.add(E.required(f"{path}.restartPolicy", "valid values: " + ", ".join(f'"{p}"' for p in allowed)))
    elif rp is not None and rp not in allowed:
        c.add(E.not_supported(f"{path}.restartPolicy", rp, allowed))
    dp = spec.get("dnsPolicy")
    if dp is not None and dp not in DNS_POLICIES:
        c.add(E.not_supported(f"{path}.dnsPolicy", dp, DNS_POLICIES))
    tg = spec.get("terminationGracePeriodSeconds")
    if isinstance(tg, int) and tg < 0:
        c.add(E.invalid_value(f"{path}.terminationGracePeriodSeconds", tg, "must be greater than or equal to 0"))
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and (not isinstance(ads, int) or ads <= 0):
        c.add(E.invalid_value(f"{path}.activeDeadlineSeconds", ads, "must be between 1 and 2147483647, inclusive"))
    san = spec.get("serviceAccountName")
    if san:
        for m in M.is_subdomain(san):
            c.add(E.invalid_value(f"{path}.serviceAccountName", san, m))


def _template(spec: Obj, c: E.Causes, *, restart_policies: list[str] | None = None, selector: bool = True) -> None:
    tpl = spec.get("template")
    if not isinstance(tpl, dict):
        c.add(E.required("spec.template"))
        return
    labels = (tpl.get("metadata") or {}).get("labels") or {}
    M.validate_labels(labels, "spec.template.metadata.labels", c)
    if selector:
        sel = spec.get("selector")
        if sel is None:
            c.add(E.required("spec.selector"))
        else:
            try:
                parsed = selectors.selector_from_spec(sel)
            except selectors.SelectorError as e:
                c.add(E.invalid_value("spec.selector", sel, str(e)))
                parsed = None
            if parsed is not None and not parsed:
                c.add(E.invalid_value("spec.selector", sel, "empty selector is invalid for deployment"))
            elif parsed is not None and not selectors.matches(parsed, labels):
                c.add(E.invalid_value("spec.template.metadata.labels", labels, "`selector` does not match template `labels`"))
    pod_spec(tpl.get("spec"), "spec.template.spec", c, restart_policies=restart_policies)


def _replicas(spec: Obj, c: E.Causes) -> None:
    r = spec.get("replicas")
    if isinstance(r, int) and r < 0:
        c.add(E.invalid_value("spec.replicas", r, "must be greater than or equal to 0"))


def _pod(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    pod_spec(obj.get("spec"), "spec", c)
    if old is None:
        return
    a, b = copy.deepcopy(obj.get("spec") or {}), copy.deepcopy(old.get("spec") or {})
    for s in (a, b):
        s.pop("activeDeadlineSeconds", None)
        for key in ("containers", "initContainers"):
            for ct in s.get(key) or []:
                ct.pop("image", None)
        s.pop("tolerations", None)
        if (s.get("terminationGracePeriodSeconds") or 0) < 0:
            s["terminationGracePeriodSeconds"] = 1
    if a.get("terminationGracePeriodSeconds") != b.get("terminationGracePeriodSeconds") and (
        (old.get("spec") or {}).get("terminationGracePeriodSeconds", 0) < 0
    ):
        a["terminationGracePeriodSeconds"] = b.get("terminationGracePeriodSeconds")
    old_tol = (old.get("spec") or {}).get("tolerations") or []
    new_tol = (obj.get("spec") or {}).get("tolerations") or []
    tol_ok = all(t in new_tol for t in old_tol)
    if a != b or not tol_ok:
        c.add(E.forbidden_field("spec", POD_UPDATE_FORBIDDEN))


def _service(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    spec = obj.get("spec") or {}
    typ = spec.get("type", "ClusterIP")
    if typ not in SERVICE_TYPES:
        c.add(E.not_supported("spec.type", typ, SERVICE_TYPES))
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and typ != "ExternalName" and not headless:
        c.add(E.required("spec.ports"))
    if typ == "ExternalName" and not spec.get("externalName"):
        c.add(E.required("spec.externalName"))
    seen_names: set[str] = set()
    seen_ports: set[tuple[Any, Any]] = set()
    for i, p in enumerate(ports):
        pp = f"spec.ports[{i}]"
        name = p.get("name")
        if len(ports) > 1 and not name:
            c.add(E.required(f"{pp}.name"))
        if name:
            for m in M.is_label(name):
                c.add(E.invalid_value(f"{pp}.name", name, m))
            if name in seen_names:
                c.add(E.duplicate(f"{pp}.name", name))
            seen_names.add(name)
        _port_number(p.get("port"), f"{pp}.port", c)
        proto = p.get("protocol", "TCP")
        if proto not in PROTOCOLS:
            c.add(E.not_supported(f"{pp}.protocol", proto, PROTOCOLS))
        key = (p.get("port"), proto)
        if key in seen_ports:
            c.add(E.duplicate(f"{pp}", {"port": p.get("port"), "protocol": proto}))
        seen_ports.add(key)
        tp = p.get("targetPort")
        if isinstance(tp, int) and not isinstance(tp, bool):
            _port_number(tp, f"{pp}.targetPort", c)
        elif isinstance(tp, str) and tp:
            _port_name(tp, f"{pp}.targetPort", c)
        np_ = p.get("nodePort")
        if np_ not in (None, 0) and typ not in ("NodePort", "LoadBalancer"):
            c.add(E.forbidden_field(f"{pp}.nodePort", "may not be used when `type` is 'ClusterIP'"))
    sel = spec.get("selector")
    if sel:
        M.validate_labels(sel, "spec.selector", c)
    if old is not None:
        old_spec = old.get("spec") or {}
        old_ip, new_ip = old_spec.get("clusterIP"), spec.get("clusterIP")
        if old_ip and old_spec.get("type") != "ExternalName" and typ != "ExternalName" and new_ip != old_ip:
            c.add(E.invalid_value("spec.clusterIPs[0]", new_ip or "", "may not change once set"))


def _apps(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    spec = obj.get("spec") or {}
    _replicas(spec, c)
    _template(spec, c, restart_policies=["Always"])
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        c.add(E.invalid_value("spec.selector", spec.get("selector"), "field is immutable"))


def _job(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    spec = obj.get("spec") or {}
    _template(spec, c, restart_policies=["OnFailure", "Never"], selector=bool(spec.get("manualSelector")))
    for f in ("parallelism", "completions", "backoffLimit"):
        v = spec.get(f)
        if isinstance(v, int) and v < 0:
            c.add(E.invalid_value(f"spec.{f}", v, "must be greater than or equal to 0"))
    if old is not None:
        os_ = old.get("spec") or {}
        if os_.get("selector") != spec.get("selector"):
            c.add(E.invalid_value("spec.selector", spec.get("selector"), "field is immutable"))
        if os_.get("template") != spec.get("template") and not os_.get("suspend"):
            c.add(E.invalid_value("spec.template", spec.get("template"), "field is immutable"))
        if os_.get("completions") != spec.get("completions"):
            c.add(E.invalid_value("spec.completions", spec.get("completions"), "field is immutable"))


def _cronjob(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    spec = obj.get("spec") or {}
    sched = spec.get("schedule")
    if not sched:
        c.add(E.required("spec.schedule"))
    else:
        from croniter import croniter

        text = re.sub(r"^(CRON_)?TZ=\S+\s+", "", sched)
        if not croniter.is_valid(text) and not text.startswith("@"):
            c.add(E.invalid_value("spec.schedule", sched, "unparseable schedule"))
    cp = spec.get("concurrencyPolicy")
    if cp is not None and cp not in ("Allow", "Forbid", "Replace"):
        c.add(E.not_supported("spec.concurrencyPolicy", cp, ["Allow", "Forbid", "Replace"]))
    jt = spec.get("jobTemplate")
    if not isinstance(jt, dict):
        c.add(E.required("spec.jobTemplate"))
        return
    sub = E.Causes()
    _template(jt.get("spec") or {}, sub, restart_policies=["OnFailure", "Never"], selector=False)
    for cause in sub.items:
        c.add(E.Cause(cause.reason, cause.message, cause.field.replace("spec.", "spec.jobTemplate.spec.", 1)))


def _data_keys(obj: Obj, c: E.Causes) -> None:
    seen: set[str] = set()
    for field in ("data", "binaryData"):
        for k in obj.get(field) or {}:
            if not CONFIG_KEY.match(k) or k in (".", ".."):
                c.add(E.invalid_value(f"{field}[{k}]", k,
                      "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name', "
                      " or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"))
            if k in seen:
                c.add(E.invalid_value(f"{field}[{k}]", k, "duplicate of key present in data"))
            seen.add(k)


def _secret(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    _data_keys(obj, c)
    if old is not None and old.get("type") != obj.get("type"):
        c.add(E.invalid_value("type", obj.get("type"), "field is immutable"))
    if old is not None and old.get("immutable") and (old.get("data") != obj.get("data")):
        c.add(E.forbidden_field("data", "field is immutable when `immutable` is set"))


def _configmap(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    _data_keys(obj, c)
    if old is not None and old.get("immutable") and (
        old.get("data") != obj.get("data") or old.get("binaryData") != obj.get("binaryData")
    ):
        c.add(E.forbidden_field("data", "field is immutable when `immutable` is set"))


def _endpointslice(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    at = obj.get("addressType")
    if not at:
        c.add(E.required("addressType"))
    elif at not in ("IPv4", "IPv6", "FQDN"):
        c.add(E.not_supported("addressType", at, ["FQDN", "IPv4", "IPv6"]))
    elif old is not None and old.get("addressType") != at:
        c.add(E.invalid_value("addressType", at, "field is immutable"))
    for i, ep in enumerate(obj.get("endpoints") or []):
        if not ep.get("addresses"):
            c.add(E.required(f"endpoints[{i}].addresses"))


def _webhooks(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    names: set[str] = set()
    for i, w in enumerate(obj.get("webhooks") or []):
        p = f"webhooks[{i}]"
        name = w.get("name")
        if not name:
            c.add(E.required(f"{p}.name"))
        else:
            if name.count(".") < 2:
                c.add(E.invalid_value(f"{p}.name", name, "should be a domain with at least three segments separated by dots"))
            if name in names:
                c.add(E.duplicate(f"{p}.name", name))
            names.add(name)
        cc = w.get("clientConfig") or {}
        if bool(cc.get("url")) == bool(cc.get("service")):
            c.add(E.required(f"{p}.clientConfig", "exactly one of url or service is required"))
        if not w.get("admissionReviewVersions"):
            c.add(E.required(f"{p}.admissionReviewVersions", "must specify one of v1, v1beta1"))
        se = w.get("sideEffects")
        if se is None:
            c.add(E.required(f"{p}.sideEffects", "must specify one of None, NoneOnDryRun"))
        elif se not in ("None", "NoneOnDryRun"):
            c.add(E.not_supported(f"{p}.sideEffects", se, ["None", "NoneOnDryRun"]))
        fp = w.get("failurePolicy")
        if fp is not None and fp not in ("Fail", "Ignore"):
            c.add(E.not_supported(f"{p}.failurePolicy", fp, ["Fail", "Ignore"]))


def _namespace(obj: Obj, old: Obj | None, c: E.Causes) -> None:
    for i, f in enumerate((obj.get("spec") or {}).get("finalizers") or []):
        if "/" not in f and f != "kubernetes":
            c.add(E.invalid_value(f"spec.finalizers[{i}]", f, "name is neither a standard finalizer name nor is it fully qualified"))


VALIDATORS = {
    ("", "Pod"): _pod,
    ("", "Service"): _service,
    ("", "Secret"): _secret,
    ("", "ConfigMap"): _configmap,
    ("", "Namespace"): _namespace,
    ("apps", "Deployment"): _apps,
    ("apps", "ReplicaSet"): _apps,
    ("apps", "DaemonSet"): _apps,
    ("apps", "StatefulSet"): _apps,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
    ("discovery.k8s.io", "EndpointSlice"): _endpointslice,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _webhooks,
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _webhooks,
}


def validate(group: str, kind: str, namespaced: bool, obj: Obj, old: Obj | None = None) -> list[E.Cause]:
    c = E.Causes()
    meta = obj.get("metadata") or {}
    M.validate_object_meta(meta, namespaced, NAME_RULES.get((group, kind), "subdomain"), c)
    if old is not None:
        om = old.get("metadata") or {}
        if meta.get("name") != om.get("name"):
            c.add(E.invalid_value("metadata.name", meta.get("name"), "field is immutable"))
        if meta.get("uid") and meta.get("uid") != om.get("uid"):
            c.add(E.invalid_value("metadata.uid", meta.get("uid"), "field is immutable"))
    fn = VALIDATORS.get((group, kind))
    if fn:
        fn(obj, old, c)
    return c.items
