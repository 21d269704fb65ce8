"""Discovery documents: legacy (APIVersions, APIGroupList, APIGroup, APIResourceList) and aggregated
(apidiscovery.k8s.io/v2 APIGroupDiscoveryList, which kubectl 1.32 asks for first)."""

from __future__ import annotations

from typing import Any

from minimesh.cluster.local.apiserver.registry import Registry, ResourceType

Obj = dict[str, Any]
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def _legacy_resource(t: ResourceType) -> list[Obj]:
    entry: Obj = {
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        entry["shortNames"] = list(t.short_names)
    if t.categories:
        entry["categories"] = list(t.categories)
    out = [entry]
    for s in t.subresources:
        sub: Obj = {"name": f"{t.plural}/{s.name}", "singularName": "", "namespaced": t.namespaced,
                    "kind": s.kind or t.kind, "verbs": list(s.verbs)}
        if s.group is not None:
            sub["group"], sub["version"] = s.group, s.version
        out.append(sub)
    return out


def resource_list(reg: Registry, group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for t in sorted(reg.in_group_version(group, version), key=lambda t: t.plural):
        resources += _legacy_resource(t)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(group: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def group_list(reg: Registry) -> Obj:
    groups = [_group(g, vs) for g, vs in reg.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(reg: Registry, group: str) -> Obj | None:
    vs = reg.group_versions().get(group)
    if not vs:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, vs)}


def _aggregated_resource(t: ResourceType) -> Obj:
    r: Obj = {
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
        "scope": "Namespaced" if t.namespaced else "Cluster",
        "singularResource": t.singular,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        r["shortNames"] = list(t.short_names)
    if t.categories:
        r["categories"] = list(t.categories)
    if t.subresources:
        r["subresources"] = [
            {
                "subresource": s.name,
                "responseKind": {
                    "group": t.group if s.group is None else s.group,
                    "version": t.version if s.version is None else s.version,
                    "kind": s.kind or t.kind,
                },
                "verbs": list(s.verbs),
            }
            for s in t.subresources
        ]
    return r


def aggregated(reg: Registry, legacy: bool, api_version: str = "apidiscovery.k8s.io/v2") -> Obj:
    """/api (legacy=True: the core group) or /apis (every named group)."""
    items = []
    for g, versions in reg.group_versions().items():
        if (g == "") != legacy:
            continue
        items.append({
            "metadata": {"name": g, "creationTimestamp": None},
            "versions": [
                {
                    "version": v,
                    "resources": [_aggregated_resource(t) for t in sorted(reg.in_group_version(g, v), key=lambda t: t.plural)],
                    "freshness": "Current",
                }
                for v in versions
            ],
        })
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}
