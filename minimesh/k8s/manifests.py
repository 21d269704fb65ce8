"""Loading manifests and applying them with the official client (server-side apply), on any provider."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Objects others depend on go first, as `kubectl apply` users learn to order them.
KIND_ORDER = {
    "Namespace": 0,
    "CustomResourceDefinition": 1,
    "ServiceAccount": 2,
    "ClusterRole": 3,
    "ClusterRoleBinding": 3,
    "Role": 3,
    "RoleBinding": 3,
    "ConfigMap": 4,
    "Secret": 4,
    "Service": 5,
}
FIELD_MANAGER = "minimesh"


class ManifestError(ValueError):
    """A manifest that cannot be applied; the message names the file and document."""


def load_documents(source: str | Path) -> list[dict[str, Any]]:
    """Read every YAML document of a file, a directory (*.yaml, *.yml, sorted) or '-' (stdin)."""
    if str(source) == "-":
        return _parse(sys.stdin.read(), "<stdin>")
    path = Path(source)
    if path.is_dir():
        docs: list[dict[str, Any]] = []
        for p in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
            docs.extend(_parse(p.read_text(), str(p)))
        return docs
    if not path.exists():
        raise ManifestError(f"{path}: no such file or directory")
    return _parse(path.read_text(), str(path))


def _parse(text: str, origin: str) -> list[dict[str, Any]]:
    try:
        raw = list(yaml.safe_load_all(io.StringIO(text)))
    except yaml.YAMLError as e:
        raise ManifestError(f"{origin}: not valid YAML: {e}") from None
    docs = []
    for i, doc in enumerate(raw):
        if doc is None:
            continue
        where = f"{origin} (document {i + 1})"
        if not isinstance(doc, dict):
            raise ManifestError(f"{where}: expected a mapping with apiVersion/kind/metadata, got {type(doc).__name__}")
        if doc.get("kind") == "List":
            docs.extend(doc.get("items") or [])
            continue
        for key in ("apiVersion", "kind"):
            if not doc.get(key):
                raise ManifestError(f"{where}: missing {key}")
        if not (doc.get("metadata") or {}).get("name") and not (doc.get("metadata") or {}).get("generateName"):
            raise ManifestError(f"{where}: {doc['kind']} has no metadata.name")
        docs.append(doc)
    return docs


def ordered(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda d: KIND_ORDER.get(d.get("kind", ""), 10))


@dataclass
class Applied:
    kind: str
    group: str
    name: str
    namespace: str | None
    action: str  # created | configured | unchanged

    def __str__(self) -> str:
        res = self.kind.lower() + (f".{self.group}" if self.group else "")
        return f"{res}/{self.name} {self.action}"


class Applier:
    """Server-side apply through the dynamic client: create or update, the same on every provider."""

    def __init__(self, api_client: Any):
        from kubernetes.dynamic import DynamicClient

        self.dyn = DynamicClient(api_client)

    def resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            self.dyn.resources.invalidate_cache()  # a CRD applied a moment ago
            try:
                return self.dyn.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise ManifestError(
                    f"the cluster does not serve {kind} in {api_version}: is its CRD installed?"
                ) from None

    def apply(self, doc: dict[str, Any], namespace: str | None = None) -> Applied:
        from kubernetes.client.exceptions import ApiException

        res = self.resource(doc["apiVersion"], doc["kind"])
        meta = doc.setdefault("metadata", {})
        ns = None
        if res.namespaced:
            ns = meta.get("namespace") or namespace or "default"
            meta["namespace"] = ns
        name = meta["name"]
        try:
            before = res.get(name=name, namespace=ns)
        except ApiException as e:
            if e.status != 404:
                raise
            before = None
        after = res.server_side_apply(
            body=doc, name=name, namespace=ns, field_manager=FIELD_MANAGER, force_conflicts=True
        )
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if before is None:
            action = "created"
        elif before.metadata.resourceVersion == after.metadata.resourceVersion:
            action = "unchanged"
        else:
            action = "configured"
        return Applied(doc["kind"], group, name, ns, action)

    def delete(self, doc: dict[str, Any], namespace: str | None = None) -> str:
        from kubernetes.client.exceptions import ApiException

        res = self.resource(doc["apiVersion"], doc["kind"])
        meta = doc.get("metadata", {})
        ns = (meta.get("namespace") or namespace or "default") if res.namespaced else None
        try:
            res.delete(name=meta["name"], namespace=ns, propagation_policy="Background")
            return f"{doc['kind'].lower()}/{meta['name']} deleted"
        except ApiException as e:
            if e.status == 404:
                return f"{doc['kind'].lower()}/{meta['name']} not found"
            raise


def apply_all(api_client: Any, docs: Iterable[dict[str, Any]], namespace: str | None = None) -> Iterator[Applied]:
    applier = Applier(api_client)
    for doc in ordered(docs):
        yield applier.apply(doc, namespace)
