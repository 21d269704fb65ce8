"""Which resources the API server serves: group/version/kind/plural/scope/verbs/subresources.

Built-ins are listed here; CustomResourceDefinitions add and remove entries at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)


@dataclass(frozen=True)
class Subresource:
    name: str
    verbs: tuple[str, ...]
    kind: str = ""  # response kind when it is not the parent's
    group: str | None = None  # response group/version when different
    version: str | None = None


@dataclass
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[Subresource, ...] = ()
    generation: bool = False  # metadata.generation tracks spec changes
    stored: bool = True  # False for virtual resources (TokenReview, SubjectAccessReview)
    storage_group: str | None = None  # shares storage with another group (events.k8s.io -> core)
    singular: str = ""
    list_kind: str = ""
    definition: str = ""  # name in the OpenAPI definitions
    crd: dict[str, Any] | None = None  # the CRD version entry (schema, printer columns) for custom resources
    crd_name: str = ""

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.list_kind = self.list_kind or f"{self.kind}List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Storage identity, shared by every version of the resource."""
        g = self.group if self.storage_group is None else self.storage_group
        return f"{g}/{self.plural}"

    def sub(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)

    @property
    def has_status(self) -> bool:
        return self.sub("status") is not None


def _status(verbs: tuple[str, ...] = ("get", "patch", "update")) -> Subresource:
    return Subresource("status", verbs)


_SCALE = Subresource("scale", ("get", "patch", "update"), "Scale", "autoscaling", "v1")


def _def(group: str, version: str, kind: str) -> str:
    pkg = {
        "": "core",
        "apps": "apps",
        "batch": "batch",
        "discovery.k8s.io": "discovery",
        "events.k8s.io": "events",
        "coordination.k8s.io": "coordination",
        "admissionregistration.k8s.io": "admissionregistration",
        "authentication.k8s.io": "authentication",
        "authorization.k8s.io": "authorization",
        "rbac.authorization.k8s.io": "rbac",
        "policy": "policy",
        "networking.k8s.io": "networking",
        "autoscaling": "autoscaling",
    }.get(group)
    if group == "apiextensions.k8s.io":
        return f"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{kind}"
    return f"io.k8s.api.{pkg}.{version}.{kind}"


def builtin_types() -> list[ResourceType]:
    R = ResourceType
    S = Subresource
    types = [
        R("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",),
          verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
          subresources=(S("finalize", ("update",)), _status())),
        R("", "v1", "Pod", "pods", short_names=("po",), categories=("all",),
          subresources=(
              S("attach", ("create", "get"), "PodAttachOptions"),
              S("binding", ("create",), "Binding"),
              S("ephemeralcontainers", ("get", "patch", "update")),
              S("eviction", ("create",), "Eviction", "policy", "v1"),
              S("exec", ("create", "get"), "PodExecOptions"),
              S("log", ("get",), "Pod"),
              S("portforward", ("create", "get"), "PodPortForwardOptions"),
              S("proxy", ("create", "delete", "get", "patch", "update"), "PodProxyOptions"),
              _status(),
          )),
        R("", "v1", "Service", "services", short_names=("svc",), categories=("all",),
          verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
          subresources=(S("proxy", ("create", "delete", "get", "patch", "update"), "ServiceProxyOptions"), _status())),
        R("", "v1", "Endpoints", "endpoints", short_names=("ep",), singular="endpoints", list_kind="EndpointsList"),
        R("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",),
          subresources=(S("token", ("create",), "TokenRequest", "authentication.k8s.io", "v1"),)),
        R("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
        R("", "v1", "Secret", "secrets"),
        R("", "v1", "Node", "nodes", namespaced=False, short_names=("no",),
          subresources=(S("proxy", ("create", "delete", "get", "patch", "update"), "NodeProxyOptions"), _status())),
        R("", "v1", "Event", "events", short_names=("ev",)),
        R("", "v1", "LimitRange", "limitranges", short_names=("limits",)),
        R("", "v1", "ResourceQuota", "resourcequotas", short_names=("quota",), subresources=(_status(),)),
        R("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short_names=("pvc",), subresources=(_status(),)),
        R("", "v1", "PodTemplate", "podtemplates"),
        R("", "v1", "Binding", "bindings", verbs=CREATE_ONLY, stored=False),
        R("apps", "v1", "Deployment", "deployments", short_names=("deploy",), categories=("all",), generation=True,
          subresources=(_SCALE, _status())),
        R("apps", "v1", "ReplicaSet", "replicasets", short_names=("rs",), categories=("all",), generation=True,
          subresources=(_SCALE, _status())),
        R("apps", "v1", "DaemonSet", "daemonsets", short_names=("ds",), categories=("all",), generation=True,
          subresources=(_status(),)),
        R("apps", "v1", "StatefulSet", "statefulsets", short_names=("sts",), categories=("all",), generation=True,
          subresources=(_SCALE, _status())),
        R("apps", "v1", "ControllerRevision", "controllerrevisions"),
        R("batch", "v1", "Job", "jobs", categories=("all",), generation=True, subresources=(_status(),)),
        R("batch", "v1", "CronJob", "cronjobs", short_names=("cj",), categories=("all",), generation=True,
          subresources=(_status(),)),
        R("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", generation=True),
        R("events.k8s.io", "v1", "Event", "events", short_names=("ev",), storage_group=""),
        R("coordination.k8s.io", "v1", "Lease", "leases"),
        R("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
          namespaced=False, short_names=("crd", "crds"), categories=("api-extensions",), generation=True,
          subresources=(_status(),)),
        R("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
          namespaced=False, categories=("api-extensions",), generation=True),
        R("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations",
          namespaced=False, categories=("api-extensions",), generation=True),
        R("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False, verbs=CREATE_ONLY,
          stored=False),
        R("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", namespaced=False,
          verbs=CREATE_ONLY, stored=False),
        R("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", namespaced=False,
          verbs=CREATE_ONLY, stored=False),
        R("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", namespaced=False,
          verbs=CREATE_ONLY, stored=False),
        R("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", namespaced=False,
          verbs=CREATE_ONLY, stored=False),
        R("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews",
          verbs=CREATE_ONLY, stored=False),
        R("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        R("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        R("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
        R("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
        R("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=("pdb",), generation=True,
          subresources=(_status(),)),
        R("networking.k8s.io", "v1", "Ingress", "ingresses", short_names=("ing",), generation=True,
          subresources=(_status(),)),
        R("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short_names=("netpol",), generation=True),
        R("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
    ]
    for t in types:
        t.definition = _def(t.group, t.version, t.kind)
    return types


# Preferred order of groups in discovery (like the real server: core first, then by priority).
GROUP_ORDER = [
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
]


@dataclass
class Registry:
    types: list[ResourceType] = field(default_factory=builtin_types)

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        for t in self.types:
            if t.group == group and t.version == version and t.plural == plural:
                return t
        return None

    def by_kind(self, group: str, version: str, kind: str) -> ResourceType | None:
        for t in self.types:
            if t.group == group and t.version == version and t.kind == kind:
                return t
        return None

    def by_key(self, key: str) -> list[ResourceType]:
        return [t for t in self.types if t.key == key]

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions (preferred first)."""
        out: dict[str, list[str]] = {}
        for t in self.types:
            vs = out.setdefault(t.group, [])
            if t.version not in vs:
                vs.append(t.version)
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self.types if t.group == group and t.version == version]

    def add(self, t: ResourceType) -> None:
        self.remove(t.group, t.version, t.plural)
        self.types.append(t)

    def remove(self, group: str, version: str, plural: str) -> None:
        self.types = [t for t in self.types if not (t.group == group and t.version == version and t.plural == plural)]

    def remove_crd(self, crd_name: str) -> None:
        self.types = [t for t in self.types if t.crd_name != crd_name]
