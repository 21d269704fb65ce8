"""Server-side printing: meta.k8s.io/v1 Table with the columns kubectl shows against a real cluster."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from minimesh.cluster.local.apiserver.podstatus import human_duration, pod_columns, since
from minimesh.k8s import selectors

Obj = dict[str, Any]
Column = tuple[str, str, int, str]  # name, type, priority, description

NAME: Column = ("Name", "string", 0, "Name must be unique within a namespace.")
AGE: Column = ("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.")
CONTAINERS: Column = ("Containers", "string", 1, "Names of each container in the template.")
IMAGES: Column = ("Images", "string", 1, "Images referenced by each container in the template.")
SELECTOR: Column = ("Selector", "string", 1, "A label query over pods.")
CREATED_AT: Column = ("Created At", "date", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.")


def _s(*cols: tuple[str, str, int] | Column) -> list[Column]:
    return [c if len(c) == 4 else (*c, "") for c in cols]  # type: ignore[misc]


def _age(o: Obj) -> str:
    return since((o.get("metadata") or {}).get("creationTimestamp"))


def _label_selector(sel: Obj | None) -> str:
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = e.get("operator")
        vals = ",".join(sorted(e.get("values") or []))
        if op == "In":
            parts.append(f"{e['key']} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{e['key']} notin ({vals})")
        elif op == "Exists":
            parts.append(e["key"])
        elif op == "DoesNotExist":
            parts.append(f"!{e['key']}")
    return ",".join(parts) or "<none>"


def _map_selector(sel: Obj | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((sel or {}).items())) or "<none>"


def _template_cells(tpl: Obj | None) -> list[str]:
    cs = ((tpl or {}).get("spec") or {}).get("containers") or []
    return [",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)]


def _pod(o: Obj) -> list[Any]:
    ready, status, restarts = pod_columns(o)
    st = o.get("status") or {}
    ips = st.get("podIPs") or []
    ip = ips[0].get("ip") if ips else st.get("podIP")
    gates = (o.get("spec") or {}).get("readinessGates") or []
    gate_cell = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
        gate_cell = f"{sum(1 for g in gates if conds.get(g.get('conditionType')) == 'True')}/{len(gates)}"
    return [o["metadata"]["name"], ready, status, restarts, _age(o), ip or "<none>",
            (o.get("spec") or {}).get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>", gate_cell]


def _svc_ports(spec: Obj) -> str:
    out = []
    for p in spec.get("ports") or []:
        proto = p.get("protocol", "TCP")
        if p.get("nodePort"):
            out.append(f"{p.get('port')}:{p['nodePort']}/{proto}")
        else:
            out.append(f"{p.get('port')}/{proto}")
    return ",".join(out) or "<none>"


def _service(o: Obj) -> list[Any]:
    spec = o.get("spec") or {}
    typ = spec.get("type", "ClusterIP")
    ext = ",".join(spec.get("externalIPs") or [])
    if typ == "ExternalName":
        ext = spec.get("externalName", "")
    elif typ == "LoadBalancer":
        ing = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        lb = ",".join(i.get("ip") or i.get("hostname") or "" for i in ing)
        ext = ",".join(x for x in (lb, ext) if x) or "<pending>"
    cluster_ip = spec.get("clusterIP") or ("<none>" if typ == "ExternalName" else "")
    return [o["metadata"]["name"], typ, cluster_ip, ext or "<none>", _svc_ports(spec), _age(o),
            _map_selector(spec.get("selector"))]


def _deployment(o: Obj) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    return [o["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), _age(o),
            *_template_cells(spec.get("template")), _label_selector(spec.get("selector"))]


def _replicaset(o: Obj) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    return [o["metadata"]["name"], spec.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0),
            _age(o), *_template_cells(spec.get("template")), _label_selector(spec.get("selector"))]


def _daemonset(o: Obj) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    ns = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector")
    return [o["metadata"]["name"], st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0),
            st.get("numberReady", 0), st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
            _map_selector(ns), _age(o), *_template_cells(spec.get("template")), _label_selector(spec.get("selector"))]


def _statefulset(o: Obj) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    return [o["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}", _age(o),
            *_template_cells(spec.get("template"))]


def _has_cond(st: Obj, typ: str) -> bool:
    return any(c.get("type") == typ and c.get("status") == "True" for c in st.get("conditions") or [])


def _job(o: Obj) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    if _has_cond(st, "Complete"):
        status = "Complete"
    elif _has_cond(st, "Failed"):
        status = "Failed"
    elif (o.get("metadata") or {}).get("deletionTimestamp"):
        status = "Terminating"
    elif _has_cond(st, "Suspended"):
        status = "Suspended"
    elif _has_cond(st, "FailureTarget"):
        status = "FailureTarget"
    elif _has_cond(st, "SuccessCriteriaMet"):
        status = "SuccessCriteriaMet"
    else:
        status = "Running"
    succeeded = st.get("succeeded", 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    else:
        par = spec.get("parallelism") or 0
        completions = f"{succeeded}/1 of {par}" if par > 1 else f"{succeeded}/1"
    duration = ""
    from minimesh.cluster.local.apiserver.meta import parse_time

    start, end = parse_time(st.get("startTime")), parse_time(st.get("completionTime"))
    if start is not None:
        end = end or datetime.now(UTC)
        duration = human_duration((end - start).total_seconds())
    return [o["metadata"]["name"], status, completions, duration, _age(o),
            *_template_cells(spec.get("template")), _label_selector(spec.get("selector"))]


def _cronjob(o: Obj) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    last = since(st["lastScheduleTime"]) if st.get("lastScheduleTime") else "<none>"
    tpl = ((spec.get("jobTemplate") or {}).get("spec") or {})
    return [o["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            "True" if spec.get("suspend") else "False", len(st.get("active") or []), last, _age(o),
            *_template_cells(tpl.get("template")), _label_selector(tpl.get("selector"))]


def _namespace(o: Obj) -> list[Any]:
    return [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age(o)]


def _node(o: Obj) -> list[Any]:
    st, spec = o.get("status") or {}, o.get("spec") or {}
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    ready = conds.get("Ready")
    status = "Ready" if ready == "True" else ("NotReady" if ready == "False" else "Unknown")
    if spec.get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = (o.get("metadata") or {}).get("labels") or {}
    roles = sorted({k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k}
                   | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set()))
    info = st.get("nodeInfo") or {}
    addrs = st.get("addresses") or []
    internal = next((a.get("address") for a in addrs if a.get("type") == "InternalIP"), "<none>")
    external = next((a.get("address") for a in addrs if a.get("type") == "ExternalIP"), "<none>")
    return [o["metadata"]["name"], status, ",".join(roles) or "<none>", _age(o), info.get("kubeletVersion", ""),
            internal, external, info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def _endpoints(o: Obj) -> list[Any]:
    items = []
    for s in o.get("subsets") or []:
        ports = s.get("ports") or [{}]
        for a in s.get("addresses") or []:
            for p in ports:
                items.append(f"{a.get('ip')}:{p['port']}" if p.get("port") else a.get("ip", ""))
    cell = ",".join(items[:3]) + (f" + {len(items) - 3} more..." if len(items) > 3 else "") if items else "<none>"
    return [o["metadata"]["name"], cell, _age(o)]


def _endpointslice(o: Obj) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in o.get("ports") or [] if p.get("port") is not None) or "<unset>"
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    cell = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "") if addrs else "<unset>"
    return [o["metadata"]["name"], o.get("addressType", ""), ports, cell, _age(o)]


def _configmap(o: Obj) -> list[Any]:
    return [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o)]


def _secret(o: Obj) -> list[Any]:
    return [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}), _age(o)]


def _serviceaccount(o: Obj) -> list[Any]:
    return [o["metadata"]["name"], len(o.get("secrets") or []), _age(o)]


def _event(o: Obj) -> list[Any]:
    io = o.get("involvedObject") or {}
    last = o.get("lastTimestamp") or o.get("eventTime")
    series = o.get("series") or {}
    if series.get("lastObservedTime"):
        last = series["lastObservedTime"]
    first = o.get("firstTimestamp") or o.get("eventTime")
    src = o.get("source") or {}
    source = src.get("component", "") + (f", {src['host']}" if src.get("host") else "")
    if not source:
        source = o.get("reportingComponent", "")
    count = series.get("count") or o.get("count") or 1
    return [since(last) if last else "<unknown>", o.get("type", ""), o.get("reason", ""),
            f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}", io.get("fieldPath", ""), source,
            (o.get("message") or "").strip(), since(first) if first else "<unknown>", str(count), o["metadata"]["name"]]


def _lease(o: Obj) -> list[Any]:
    return [o["metadata"]["name"], (o.get("spec") or {}).get("holderIdentity") or "", _age(o)]


def _ingress(o: Obj) -> list[Any]:
    spec = o.get("spec") or {}
    hosts = ",".join(r.get("host") or "*" for r in spec.get("rules") or []) or "*"
    ing = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addr = ",".join(i.get("ip") or i.get("hostname") or "" for i in ing)
    ports = "80, 443" if spec.get("tls") else "80"
    return [o["metadata"]["name"], spec.get("ingressClassName") or "<none>", hosts, addr, ports, _age(o)]


def _pdb(o: Obj) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    mn = spec.get("minAvailable")
    mx = spec.get("maxUnavailable")
    return [o["metadata"]["name"], "N/A" if mn is None else str(mn), "N/A" if mx is None else str(mx),
            st.get("disruptionsAllowed", 0), _age(o)]


def _binding(o: Obj) -> list[Any]:
    ref = o.get("roleRef") or {}
    subj = o.get("subjects") or []

    def names(kind: str) -> str:
        return ", ".join(
            (f"{s.get('namespace')}/{s.get('name')}" if kind == "ServiceAccount" else s.get("name", ""))
            for s in subj if s.get("kind") == kind
        )

    return [o["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(o),
            names("User"), names("Group"), names("ServiceAccount")]


def _webhook_config(o: Obj) -> list[Any]:
    return [o["metadata"]["name"], len(o.get("webhooks") or []), _age(o)]


def _created_at(o: Obj) -> list[Any]:
    return [o["metadata"]["name"], (o.get("metadata") or {}).get("creationTimestamp")]


Printer = tuple[list[Column], Callable[[Obj], list[Any]]]

PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "Pod"): (_s(NAME, ("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0), AGE,
                     ("IP", "string", 1), ("Node", "string", 1), ("Nominated Node", "string", 1),
                     ("Readiness Gates", "string", 1)), _pod),
    ("", "Service"): (_s(NAME, ("Type", "string", 0), ("Cluster-IP", "string", 0), ("External-IP", "string", 0),
                         ("Port(s)", "string", 0), AGE, SELECTOR), _service),
    ("", "Namespace"): (_s(NAME, ("Status", "string", 0), AGE), _namespace),
    ("", "Node"): (_s(NAME, ("Status", "string", 0), ("Roles", "string", 0), AGE, ("Version", "string", 0),
                      ("Internal-IP", "string", 1), ("External-IP", "string", 1), ("OS-Image", "string", 1),
                      ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)), _node),
    ("", "Endpoints"): (_s(NAME, ("Endpoints", "string", 0), AGE), _endpoints),
    ("", "ConfigMap"): (_s(NAME, ("Data", "string", 0), AGE), _configmap),
    ("", "Secret"): (_s(NAME, ("Type", "string", 0), ("Data", "string", 0), AGE), _secret),
    ("", "ServiceAccount"): (_s(NAME, ("Secrets", "string", 0), AGE), _serviceaccount),
    ("", "Event"): (_s(("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
                       ("Object", "string", 0), ("Subobject", "string", 1), ("Source", "string", 1),
                       ("Message", "string", 0), ("First Seen", "string", 1), ("Count", "string", 1),
                       ("Name", "string", 1)), _event),
    ("apps", "Deployment"): (_s(NAME, ("Ready", "string", 0), ("Up-to-date", "string", 0),
                                ("Available", "string", 0), AGE, CONTAINERS, IMAGES, SELECTOR), _deployment),
    ("apps", "ReplicaSet"): (_s(NAME, ("Desired", "string", 0), ("Current", "string", 0), ("Ready", "string", 0),
                                AGE, CONTAINERS, IMAGES, SELECTOR), _replicaset),
    ("apps", "DaemonSet"): (_s(NAME, ("Desired", "string", 0), ("Current", "string", 0), ("Ready", "string", 0),
                               ("Up-to-date", "string", 0), ("Available", "string", 0),
                               ("Node Selector", "string", 0), AGE, CONTAINERS, IMAGES, SELECTOR), _daemonset),
    ("apps", "StatefulSet"): (_s(NAME, ("Ready", "string", 0), AGE, CONTAINERS, IMAGES), _statefulset),
    ("batch", "Job"): (_s(NAME, ("Status", "string", 0), ("Completions", "string", 0), ("Duration", "string", 0),
                          AGE, CONTAINERS, IMAGES, SELECTOR), _job),
    ("batch", "CronJob"): (_s(NAME, ("Schedule", "string", 0), ("Timezone", "string", 0),
                              ("Suspend", "boolean", 0), ("Active", "integer", 0),
                              ("Last Schedule", "string", 0), AGE, CONTAINERS, IMAGES, SELECTOR), _cronjob),
    ("discovery.k8s.io", "EndpointSlice"): (_s(NAME, ("AddressType", "string", 0), ("Ports", "string", 0),
                                               ("Endpoints", "string", 0), AGE), _endpointslice),
    ("coordination.k8s.io", "Lease"): (_s(NAME, ("Holder", "string", 0), AGE), _lease),
    ("networking.k8s.io", "Ingress"): (_s(NAME, ("Class", "string", 0), ("Hosts", "string", 0),
                                          ("Address", "string", 0), ("Ports", "string", 0), AGE), _ingress),
    ("policy", "PodDisruptionBudget"): (_s(NAME, ("Min Available", "string", 0), ("Max Unavailable", "string", 0),
                                           ("Allowed Disruptions", "integer", 0), AGE), _pdb),
    ("rbac.authorization.k8s.io", "RoleBinding"): (_s(NAME, ("Role", "string", 0), AGE, ("Users", "string", 1),
                                                      ("Groups", "string", 1), ("ServiceAccounts", "string", 1)),
                                                   _binding),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (_s(NAME, ("Role", "string", 0), AGE,
                                                             ("Users", "string", 1), ("Groups", "string", 1),
                                                             ("ServiceAccounts", "string", 1)), _binding),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): (_s(NAME, ("Webhooks", "integer", 0), AGE),
                                                                       _webhook_config),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): (_s(NAME, ("Webhooks", "integer", 0), AGE),
                                                                         _webhook_config),
}
DEFAULT: Printer = ([NAME, CREATED_AT], _created_at)


def _jsonpath_value(obj: Any, path: str) -> Any:
    """The simple JSONPath subset CRD printer columns use: `.spec.replicas`, `.status.conditions[0].type`,
    `.status.conditions[?(@.type=="Ready")].status`."""
    import re

    cur: list[Any] = [obj]
    for tok in re.findall(r"\[\?\(@\.([\w.-]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]|\[(\d+|\*)\]|\.([^.\[\]]+)", path):
        fkey, fval, idx, key = tok
        nxt: list[Any] = []
        for c in cur:
            if key:
                if isinstance(c, dict) and key in c:
                    nxt.append(c[key])
            elif idx:
                if isinstance(c, list):
                    nxt.extend(c if idx == "*" else c[int(idx):int(idx) + 1])
            elif isinstance(c, list):
                nxt.extend(x for x in c if isinstance(x, dict) and str(x.get(fkey)) == fval)
        cur = nxt
    if not cur:
        return None
    return cur[0] if len(cur) == 1 else cur


def crd_printer(columns: list[Obj]) -> Printer:
    cols: list[Column] = [NAME]
    for c in columns:
        cols.append((c.get("name", ""), c.get("type", "string"), int(c.get("priority") or 0), c.get("description", "")))

    def row(o: Obj) -> list[Any]:
        cells: list[Any] = [o["metadata"]["name"]]
        for c in columns:
            v = _jsonpath_value(o, c.get("jsonPath", ""))
            if v is None:
                cells.append(None)
            elif c.get("type") == "date":
                cells.append(since(v) if isinstance(v, str) else v)
            elif isinstance(v, (dict, list)):
                import json

                cells.append(json.dumps(v))
            else:
                cells.append(v)
        return cells

    return cols, row


CRD_DEFAULT_COLUMNS = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]


def partial_metadata(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(printer: Printer, objs: list[Obj], *, include_object: str = "Metadata", list_meta: Obj | None = None,
          no_headers: bool = False) -> Obj:
    cols, fn = printer
    rows = []
    for o in objs:
        row: Obj = {"cells": fn(o)}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = partial_metadata(o)
        rows.append(row)
    t: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta or {}}
    t["columnDefinitions"] = [] if no_headers else [
        {"name": n, "type": typ, "format": "name" if n == "Name" else "", "description": d, "priority": p}
        for n, typ, p, d in cols
    ]
    t["rows"] = rows
    return t


def label_selector_string(sel: Obj | None) -> str:
    """Scale.status.selector: the selector in its string form."""
    if not sel:
        return ""
    try:
        reqs = selectors.selector_from_spec(sel) or ()
    except selectors.SelectorError:
        return ""
    out = []
    for r in sorted(reqs, key=lambda r: r.key):
        if r.op == "=":
            out.append(f"{r.key}={r.values[0]}")
        elif r.op in ("in", "notin"):
            out.append(f"{r.key} {r.op} ({','.join(sorted(r.values))})")
        elif r.op == "exists":
            out.append(r.key)
        else:
            out.append(f"!{r.key}")
    return ",".join(out)
