"""Which Kubernetes API types have a protobuf schema here, and the message class for an (apiVersion, kind).

The generated modules (gen/*_pb2.py, several hundred kB) are imported only when a protobuf body for their
group arrives, so the API server starts as fast as before.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from google.protobuf.message import Message

# (group, version) -> the upstream file whose messages are that group version's kinds.
GROUP_SOURCES: dict[tuple[str, str], str] = {
    ("", "v1"): "k8s.io/api/core/v1/generated.proto",
    ("apps", "v1"): "k8s.io/api/apps/v1/generated.proto",
    ("batch", "v1"): "k8s.io/api/batch/v1/generated.proto",
    ("autoscaling", "v1"): "k8s.io/api/autoscaling/v1/generated.proto",
    ("policy", "v1"): "k8s.io/api/policy/v1/generated.proto",
    ("discovery.k8s.io", "v1"): "k8s.io/api/discovery/v1/generated.proto",
    ("events.k8s.io", "v1"): "k8s.io/api/events/v1/generated.proto",
    ("coordination.k8s.io", "v1"): "k8s.io/api/coordination/v1/generated.proto",
    ("networking.k8s.io", "v1"): "k8s.io/api/networking/v1/generated.proto",
    ("rbac.authorization.k8s.io", "v1"): "k8s.io/api/rbac/v1/generated.proto",
    ("authentication.k8s.io", "v1"): "k8s.io/api/authentication/v1/generated.proto",
    ("authorization.k8s.io", "v1"): "k8s.io/api/authorization/v1/generated.proto",
    ("admissionregistration.k8s.io", "v1"): "k8s.io/api/admissionregistration/v1/generated.proto",
}
META_SOURCE = "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto"
RUNTIME_SOURCE = "k8s.io/apimachinery/pkg/runtime/generated.proto"
# Kinds every group version accepts (metav1.AddToGroupVersion); only DeleteOptions travels in a body.
META_KINDS = ("DeleteOptions",)


def module_name(source: str) -> str:
    """k8s.io/api/core/v1/generated.proto -> api_core_v1 (protoc's Python output needs flat, dot-free names)."""
    stem = source.removeprefix("k8s.io/").removesuffix("/generated.proto")
    return stem.replace("/", "_").replace(".", "_").replace("-", "_")


@cache
def module(source: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.gen.{module_name(source)}_pb2")


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def message_class(api_version: str, kind: str) -> type[Message] | None:
    """The message for a top-level object of this apiVersion and kind, or None when there is none here.

    Only messages that are objects (they carry `metadata`) count, so a body cannot claim to be, say, a
    PodSpec; DeleteOptions is accepted in every group version, as the real server does.
    """
    group, version = split_api_version(api_version)
    if kind in META_KINDS and ((group, version) in GROUP_SOURCES or api_version == "meta.k8s.io/v1"):
        return getattr(module(META_SOURCE), kind)
    source = GROUP_SOURCES.get((group, version))
    if source is None or not kind.isidentifier():
        return None
    cls = getattr(module(source), kind, None)
    if not isinstance(cls, type) or not issubclass(cls, Message):
        return None
    if "metadata" not in cls.DESCRIPTOR.fields_by_name:
        return None
    return cls


def sources() -> list[str]:
    """Every upstream file the API server needs (the regeneration script adds their imports)."""
    return [*GROUP_SOURCES.values(), META_SOURCE, RUNTIME_SOURCE]
