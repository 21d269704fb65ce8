"""Protobuf request bodies (application/vnd.kubernetes.protobuf) for the local API server.

kubectl's typed clients (`kubectl create namespace|deployment|configmap|...`, `create token`,
`auth can-i`, `run`, `expose`) send their objects as protobuf. `decode_body` turns such a body into the
same JSON dict the JSON path receives; the server answers in JSON, which kubectl accepts. Importing this
package is cheap: the generated schema is loaded on the first protobuf body. See README.md.
"""

from __future__ import annotations

from typing import Any

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"


def is_protobuf(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == MEDIA_TYPE


def decode_body(raw: bytes) -> dict[str, Any]:
    """The object in a protobuf body as a JSON dict; raises errors.ApiError (400/415) saying what is wrong."""
    from minimesh.cluster.local.apiserver.protobuf.envelope import decode

    return decode(raw)
