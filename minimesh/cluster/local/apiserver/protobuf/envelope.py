"""application/vnd.kubernetes.protobuf bodies -> the JSON dict of the object they carry.

On the wire (k8s.io/apimachinery/pkg/runtime/serializer/protobuf): the 4 bytes `k8s\\x00`, then a
runtime.Unknown {typeMeta {apiVersion, kind}, raw: the object's own message, contentEncoding,
contentType}. The kind's message is looked up in the generated schema (catalog.py) and turned into the
JSON Go would write for it (jsonform.py).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.apiserver.protobuf import catalog
from minimesh.cluster.local.apiserver.protobuf.jsonform import BodyError, to_json

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
ACCEPTED = ["application/json", "application/yaml", MEDIA_TYPE]


def decode(raw: bytes) -> dict[str, Any]:
    """The object in a protobuf request body, as a JSON dict; ApiError 400/415 says what is wrong."""
    try:
        return _decode(raw, "")
    except BodyError as e:
        raise E.bad_request(f"the protobuf body could not be decoded: {e}") from None


def _decode(raw: bytes, where: str) -> dict[str, Any]:
    at = f"{where}: " if where else ""
    if not raw.startswith(MAGIC):
        raise BodyError(f"{at}a {MEDIA_TYPE} body starts with the 4 bytes 'k8s\\x00', this one with {raw[:4]!r}")
    runtime = catalog.module(catalog.RUNTIME_SOURCE)
    try:
        unknown = runtime.Unknown.FromString(raw[len(MAGIC):])
    except DecodeError as e:
        raise BodyError(f"{at}the runtime.Unknown envelope is malformed ({e})") from None
    api_version, kind = unknown.typeMeta.apiVersion, unknown.typeMeta.kind
    if not kind or not api_version:
        raise BodyError(f"{at}the envelope names no {'kind' if not kind else 'apiVersion'} (typeMeta is "
                        f"apiVersion={api_version!r} kind={kind!r})")
    if unknown.contentEncoding:
        raise BodyError(f"{at}content encoding {unknown.contentEncoding!r} is not supported (only none)")
    if unknown.contentType not in ("", MEDIA_TYPE):
        raise BodyError(f"{at}the object is {unknown.contentType!r}, not {MEDIA_TYPE}")
    cls = catalog.message_class(api_version, kind)
    if cls is None:
        raise E.ApiError(
            415, "UnsupportedMediaType",
            f'{at}kind "{kind}" of "{api_version}" cannot be sent as {MEDIA_TYPE} here (protobuf is served for the '
            f'built-in kinds only); send it as application/json. Accepted media types: {", ".join(ACCEPTED)}')
    try:
        msg = cls.FromString(unknown.raw)
    except DecodeError as e:
        raise BodyError(f"{at}the bytes are not a valid {cls.DESCRIPTOR.full_name} ({e})") from None
    return {"kind": kind, "apiVersion": api_version, **to_json(msg, _decode, where)}
