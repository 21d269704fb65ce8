"""Every Kubernetes object the kit ships is valid for Kubernetes 1.32 (offline schemas, strict mode:
unknown fields fail), and bookinfo/sleep have the shape the stages rely on.

New manifests join by glob: minimesh/manifests/**/*.yaml and clusters/**/*.yaml (documents with an
apiVersion and kind of Kubernetes; kind's own config is checked in test_kind.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from minimesh import manifests

REPO = Path(os.environ.get("MINIMESH_REPO", Path(__file__).resolve().parents[2]))
K8S_VERSION = "1.32.0"
NOT_KUBERNETES = ("kind.x-k8s.io/",)  # configs of other tools that look like objects


def _documents() -> list[tuple[str, int, dict[str, Any]]]:
    files = sorted({*REPO.glob("minimesh/manifests/**/*.yaml"), *REPO.glob("clusters/**/*.yaml")})
    docs = []
    for f in files:
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                continue
            if str(doc["apiVersion"]).startswith(NOT_KUBERNETES):
                continue
            docs.append((str(f.relative_to(REPO)), i + 1, doc))
    return docs


DOCS = _documents()


def test_the_glob_finds_the_shipped_manifests() -> None:
    files = {f for f, _, _ in DOCS}
    assert {"minimesh/manifests/bookinfo.yaml", "minimesh/manifests/sleep.yaml", "clusters/capture-pod.yaml"} <= files


def _custom_kinds() -> set[tuple[str, str]]:
    """(group/version, kind) served by CRDs shipped in the repo: validated by their own schema elsewhere."""
    out = set()
    for _, _, doc in DOCS:
        if doc["kind"] == "CustomResourceDefinition":
            spec = doc.get("spec", {})
            for v in spec.get("versions", []):
                out.add((f"{spec.get('group')}/{v.get('name')}", spec.get("names", {}).get("kind")))
    return out


@pytest.mark.parametrize(("file", "index", "doc"), DOCS, ids=[f"{f}#{i}-{d['kind']}" for f, i, d in DOCS])
def test_valid_for_kubernetes_1_32_strict(file: str, index: int, doc: dict[str, Any]) -> None:
    if (doc["apiVersion"], doc["kind"]) in _custom_kinds():
        pytest.skip(f"{doc['kind']} is a custom resource of this repo")
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{file} document {index} ({doc['kind']} {doc['metadata'].get('name')}): {path}: {e.message}")


def test_strict_validation_does_catch_an_unknown_field() -> None:
    service = manifests.load("bookinfo")[0]
    broken = {**service, "spec": {**service["spec"], "prots": service["spec"]["ports"]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# ---- the shape later stages rely on ----------------------------------------------------------------------
def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_bookinfo_objects() -> None:
    objs = manifests.load("bookinfo")
    services = _by_kind(objs, "Service")
    accounts = _by_kind(objs, "ServiceAccount")
    deployments = _by_kind(objs, "Deployment")
    apps = ("details", "ratings", "reviews", "productpage")
    assert set(services) == set(apps)
    assert set(accounts) == {f"bookinfo-{a}" for a in apps}
    assert set(deployments) == {"details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"}
    for name, svc in services.items():
        assert svc["spec"]["selector"] == {"app": name}
        assert svc["spec"]["ports"] == [{"name": "http", "port": 9080, "targetPort": 9080, "appProtocol": "http"}]
    for name, dep in deployments.items():
        app, version = name.rsplit("-", 1)
        labels = {"app": app, "version": version}
        assert dep["spec"]["selector"]["matchLabels"] == labels
        pod = dep["spec"]["template"]
        assert pod["metadata"]["labels"] == labels
        spec = pod["spec"]
        assert spec["serviceAccountName"] == f"bookinfo-{app}"
        (c,) = spec["containers"]
        assert c["image"] == "minimesh/minimesh:dev" and c["imagePullPolicy"] == "IfNotPresent"
        assert c["command"] == ["python", "-m", "minimesh.apps.bookinfo", app]
        assert {"name": "SERVICE_VERSION", "value": version} in c["env"]
        assert c["ports"] == [{"name": "http", "containerPort": 9080}]
        assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": 9080}
        assert c["securityContext"]["runAsUser"] not in (0, 1337)  # 1337 is the proxy: its traffic escapes capture
        _assert_source_mount(spec, c)


def _assert_source_mount(spec: dict[str, Any], container: dict[str, Any]) -> None:
    (vol,) = [v for v in spec["volumes"] if v["name"] == "minimesh-source"]
    assert vol["hostPath"] == {"path": "/opt/minimesh", "type": "Directory"}
    assert {"name": "minimesh-source", "mountPath": "/opt/minimesh", "readOnly": True} in container["volumeMounts"]


def test_sleep_objects() -> None:
    objs = manifests.load("sleep")
    assert set(_by_kind(objs, "ServiceAccount")) == {"sleep"}
    (svc,) = _by_kind(objs, "Service").values()
    assert svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["selector"] == {"app": "sleep"}
    (dep,) = _by_kind(objs, "Deployment").values()
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "sleep"
    (c,) = spec["containers"]
    assert c["image"] == "minimesh/minimesh:dev" and c["command"] == ["python", "-m", "minimesh.apps.sleep"]
    _assert_source_mount(spec, c)


def test_loader_errors_name_the_file_and_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n---\nkind: [unclosed\n")
    with pytest.raises(manifests.ManifestError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        manifests.load_file(bad)
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {}\n")
    with pytest.raises(manifests.ManifestError, match=r"document 1 \(Service\) lacks metadata\.name"):
        manifests.load_file(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(manifests.ManifestError, match="document 1 is a list"):
        manifests.load_file(bad)
    with pytest.raises(manifests.ManifestError, match=r"available: .*bookinfo"):
        manifests.load("bookinfo-full")


def test_loader_accepts_names_with_or_without_suffix() -> None:
    assert manifests.load("sleep") == manifests.load("sleep.yaml")
    assert "bookinfo" in manifests.available() and "sleep" in manifests.available()
