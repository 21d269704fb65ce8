"""The control plane's objects, rendered from `minimesh/manifests/mesh/*.yaml` with the install options. Pure.

The YAML files are complete, valid objects (they are checked against Kubernetes' schemas like every
manifest of the kit); rendering only fills what depends on the install: the image of minimeshd, the
injector's flags, and the webhook's caBundle.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minimesh.k8s.manifests import load_documents

Obj = dict[str, Any]
MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
MESH_DIR = MANIFESTS / "mesh"
CRD_DIR = MANIFESTS / "crds"

NAMESPACE = "mesh-system"
DEPLOYMENT = "minimeshd"
SERVICE = "minimeshd"
SERVICE_ACCOUNT = "minimeshd"
WEBHOOK_CONFIG = "minimesh-sidecar-injector"
CA_SECRET = "minimesh-ca"
WEBHOOK_TLS_SECRET = "minimeshd-webhook-tls"
WEBHOOK_PORT_NAME = "https-webhook"
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")  # registered last, removed first
# The names the API server may dial minimeshd by (it uses <svc>.<ns>.svc for clientConfig.service).
SERVICE_DNS_NAMES = (f"{SERVICE}.{NAMESPACE}.svc", f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
                     f"{SERVICE}.{NAMESPACE}", SERVICE)
IMAGE = "minimesh/minimesh:dev"


@dataclass(frozen=True)
class Options:
    image: str = IMAGE
    native_sidecars: bool = False


def crds() -> list[Obj]:
    """The mesh CRDs (written by the push server's stage), in file order; none yet is fine."""
    return load_documents(CRD_DIR) if CRD_DIR.is_dir() else []


def control_plane(options: Options, ca_pem: bytes) -> list[Obj]:
    """Every object of minimesh/manifests/mesh/, in file order, with the options applied."""
    out = []
    for doc in load_documents(MESH_DIR):
        doc = copy.deepcopy(doc)
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == DEPLOYMENT:
            _set_image(doc, options)
        if doc["kind"] in WEBHOOK_KINDS:
            for hook in doc["webhooks"]:
                hook["clientConfig"]["caBundle"] = base64.b64encode(ca_pem).decode()
        out.append(doc)
    return out


def _set_image(deployment: Obj, options: Options) -> None:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        c["image"] = options.image
        if c["name"] == "injector":  # the image of the containers it injects
            c["args"] = [*c.get("args", []), "--image", options.image]
            if options.native_sidecars:
                c["args"].append("--native-sidecars")


def split(objects: list[Obj]) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """(before minimeshd, minimeshd's Service and Deployment, the webhook configurations): the install order."""
    first = [o for o in objects if o["kind"] not in ("Service", "Deployment", *WEBHOOK_KINDS)]
    workload = [o for o in objects if o["kind"] in ("Service", "Deployment")]
    last = [o for o in objects if o["kind"] in WEBHOOK_KINDS]
    return first, workload, last
