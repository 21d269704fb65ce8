"""ObjectMeta rules: names, generateName, labels, annotations, timestamps (pure functions)."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from minimesh.cluster.local.apiserver import errors as E

DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + r"(\." + DNS1123_LABEL + ")*"
DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QNAME_PART = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must"
    " start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '"
    + DNS1123_SUBDOMAIN
    + "')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and"
    " end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '"
    + DNS1123_LABEL
    + "')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic"
    " character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for"
    " validation is '" + DNS1035_LABEL + "')"
)

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def new_uid() -> str:
    return str(uuid.uuid4())


def generate_name(prefix: str) -> str:
    # Like names.SimpleNameGenerator: the prefix is cut so the result stays within 63 characters.
    prefix = prefix[: 63 - 5]
    return prefix + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))


def is_subdomain(value: str) -> list[str]:
    msgs = []
    if len(value) > 253:
        msgs.append("must be no more than 253 characters")
    if not re.fullmatch(DNS1123_SUBDOMAIN, value):
        msgs.append(SUBDOMAIN_MSG)
    return msgs


def is_label(value: str) -> list[str]:
    msgs = []
    if len(value) > 63:
        msgs.append("must be no more than 63 characters")
    if not re.fullmatch(DNS1123_LABEL, value):
        msgs.append(LABEL_MSG)
    return msgs


def is_dns1035(value: str) -> list[str]:
    msgs = []
    if len(value) > 63:
        msgs.append("must be no more than 63 characters")
    if not re.fullmatch(DNS1035_LABEL, value):
        msgs.append(DNS1035_MSG)
    return msgs


def is_qualified_name(value: str) -> list[str]:
    parts = value.split("/")
    msgs: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            msgs.append("prefix part must be non-empty")
        else:
            msgs += ["prefix part " + m for m in is_subdomain(prefix)]
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with"
            " an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is"
            " '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g."
            " 'example.com/MyName')"
        ]
    if not name:
        msgs.append("name part must be non-empty")
    elif len(name) > 63:
        msgs.append("name part must be no more than 63 characters")
    elif not re.fullmatch(_QNAME_PART, name):
        msgs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an"
            " alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is"
            " '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return msgs


def is_label_value(value: str) -> list[str]:
    msgs = []
    if len(value) > 63:
        msgs.append("must be no more than 63 characters")
    if not re.fullmatch(_LABEL_VALUE, value):
        msgs.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and"
            " must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345',"
            " regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    return msgs


def validate_labels(labels: Any, path: str, causes: E.Causes) -> None:
    if labels is None:
        return
    for k, v in labels.items():
        for m in is_qualified_name(k):
            causes.add(E.invalid_value(path, k, m))
        if not isinstance(v, str):
            causes.add(E.invalid_value(f"{path}.{k}", v, "must be a string"))
            continue
        for m in is_label_value(v):
            causes.add(E.invalid_value(path, v, m))


def validate_annotations(annotations: Any, path: str, causes: E.Causes) -> None:
    if annotations is None:
        return
    total = 0
    for k, v in annotations.items():
        for m in is_qualified_name(k.lower()):
            causes.add(E.invalid_value(path, k, m))
        total += len(k) + len(v if isinstance(v, str) else str(v))
    if total > 256 * 1024:
        causes.add(E.too_long(path, "", 256 * 1024))


def validate_object_meta(meta: dict[str, Any], namespaced: bool, name_check: str, causes: E.Causes) -> None:
    """name_check: 'subdomain', 'label', 'dns1035' or 'path' (any name without '/' or '%')."""
    name = meta.get("name") or ""
    if not name:
        causes.add(E.required("metadata.name", "name or generateName is required"))
    else:
        checker = {"subdomain": is_subdomain, "label": is_label, "dns1035": is_dns1035}.get(name_check)
        msgs = checker(name) if checker else _path_segment(name)
        for m in msgs:
            causes.add(E.invalid_value("metadata.name", name, m))
    if namespaced:
        ns = meta.get("namespace") or ""
        if not ns:
            causes.add(E.required("metadata.namespace"))
    elif meta.get("namespace"):
        causes.add(E.forbidden_field("metadata.namespace", "not allowed on this type"))
    validate_labels(meta.get("labels"), "metadata.labels", causes)
    validate_annotations(meta.get("annotations"), "metadata.annotations", causes)
    for i, f in enumerate(meta.get("finalizers") or []):
        if "/" not in f and f not in ("kubernetes", "orphan", "foregroundDeletion"):
            causes.add(
                E.invalid_value(f"metadata.finalizers[{i}]", f, "name is neither a standard finalizer name nor is it fully qualified")
            )
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        p = f"metadata.ownerReferences[{i}]"
        for fld in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(fld):
                causes.add(E.invalid_value(f"{p}.{fld}", ref.get(fld, ""), f"{fld} must not be empty") if fld != "uid"
                           else E.invalid_value(f"{p}.uid", "", "uid must not be empty"))


def _path_segment(name: str) -> list[str]:
    if name in (".", ".."):
        return [f'may not be "{name}"']
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]
