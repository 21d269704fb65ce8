"""Kubeconfig files for a local cluster: its own file, and a kind-style merge into ~/.kube/config."""

from __future__ import annotations

import base64
import fcntl
import os
from pathlib import Path
from typing import Any

import yaml

from minimesh.cluster.local.layout import ClusterLayout
from minimesh.cluster.local.pki import Pki


def context_name(layout: ClusterLayout) -> str:
    return f"minimesh-{layout.name}"


def build(layout: ClusterLayout, pki: Pki, server: str | None = None) -> dict[str, Any]:
    name = context_name(layout)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": name,
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server or layout.api_server_url,
                    "certificate-authority-data": base64.b64encode(pki.ca_cert.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": pki.admin_token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
    }


def write(layout: ClusterLayout, pki: Pki) -> Path:
    path = layout.kubeconfig_path
    path.write_text(yaml.safe_dump(build(layout, pki), sort_keys=False))
    os.chmod(path, 0o600)
    return path


def user_kubeconfig() -> Path:
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first) if first else Path.home() / ".kube" / "config"


def _edit_user_kubeconfig(edit) -> None:  # type: ignore[no-untyped-def]
    path = user_kubeconfig()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".minimesh.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cfg = (yaml.safe_load(path.read_text()) if path.exists() else None) or {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [],
            "users": [],
            "contexts": [],
        }
        edit(cfg)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
        os.chmod(tmp, 0o600)
        tmp.replace(path)


def merge_into_user(layout: ClusterLayout, pki: Pki, *, set_current: bool) -> None:
    """Add (or refresh) the cluster's context in ~/.kube/config, as kind does."""
    ours = build(layout, pki)
    name = context_name(layout)

    def edit(cfg: dict[str, Any]) -> None:
        for section in ("clusters", "users", "contexts"):
            entries = [e for e in (cfg.get(section) or []) if e.get("name") != name]
            cfg[section] = [*entries, *ours[section]]
        if set_current or not cfg.get("current-context"):
            cfg["current-context"] = name

    _edit_user_kubeconfig(edit)


def remove_from_user(layout: ClusterLayout) -> None:
    name = context_name(layout)
    if not user_kubeconfig().exists():
        return

    def edit(cfg: dict[str, Any]) -> None:
        for section in ("clusters", "users", "contexts"):
            cfg[section] = [e for e in (cfg.get(section) or []) if e.get("name") != name]
        if cfg.get("current-context") == name:
            cfg["current-context"] = ""

    _edit_user_kubeconfig(edit)
