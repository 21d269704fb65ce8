"""What the echo server answers (pure: a parsed request in, response bytes out)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

MAX_DELAY = 60.0
MAX_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Identity:
    """Who this echo server is (from the pod's environment)."""

    pod: str = ""
    namespace: str = ""
    service: str = ""
    version: str = ""


@dataclass
class EchoRequest:
    method: str
    target: str
    http_version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_bytes: int = 0
    peer: str = "-"
    local: str = "-"


@dataclass(frozen=True)
class Plan:
    """How to answer: status, delay before answering, and the payload."""

    status: int
    delay: float
    body: bytes
    content_type: str


class BadQuery(ValueError):
    pass


def _param(query: dict[str, str], name: str) -> str | None:
    value = query.get(name)
    return value if value not in (None, "") else None


def parse_controls(target: str) -> tuple[int, float, int | None]:
    """(status, delay seconds, size or None) from the request target's query string."""
    query = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
    status, delay, size = 200, 0.0, None
    if (raw := _param(query, "status")) is not None:
        if not raw.isdigit() or not 200 <= int(raw) <= 599:
            raise BadQuery(f"status={raw!r}: want an HTTP status code 200-599")
        status = int(raw)
    if (raw := _param(query, "delay")) is not None:
        try:
            delay = float(raw)
        except ValueError:
            raise BadQuery(f"delay={raw!r}: want seconds, like 0.2") from None
        if not 0 <= delay <= MAX_DELAY:
            raise BadQuery(f"delay={raw!r}: want 0-{MAX_DELAY:g} seconds")
    if (raw := _param(query, "size")) is not None:
        if not raw.isdigit() or int(raw) > MAX_SIZE:
            raise BadQuery(f"size={raw!r}: want a byte count 0-{MAX_SIZE}")
        size = int(raw)
    return status, delay, size


def echo_document(req: EchoRequest, me: Identity) -> dict[str, object]:
    headers: dict[str, str] = {}
    for name, value in req.headers:
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    parts = urlsplit(req.target)
    return {
        "method": req.method,
        "path": parts.path,
        "query": parts.query,
        "http_version": req.http_version,
        "headers": headers,
        "body_bytes": req.body_bytes,
        "peer": req.peer,
        "local": req.local,
        "pod": me.pod,
        "namespace": me.namespace,
        "service": me.service,
        "version": me.version,
    }


def plan(req: EchoRequest, me: Identity) -> Plan:
    try:
        status, delay, size = parse_controls(req.target)
    except BadQuery as e:
        body = json.dumps({"error": str(e)}).encode()
        return Plan(400, 0.0, body, "application/json")
    if size is not None:
        return Plan(status, delay, b"x" * size, "application/octet-stream")
    body = json.dumps(echo_document(req, me), separators=(",", ":")).encode()
    return Plan(status, delay, body, "application/json")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def response_bytes(p: Plan, me: Identity, *, keep_alive: bool, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {p.status} {_reason(p.status)}\r\n"
        f"content-type: {p.content_type}\r\n"
        f"content-length: {len(p.body)}\r\n"
        f"x-echo-pod: {me.pod or '-'}\r\n"
        f"x-echo-version: {me.version or '-'}\r\n"
        "server: minimesh-echo\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + p.body


def error_response(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nserver: minimesh-echo\r\nconnection: close\r\n\r\n"
    ).encode("latin-1") + body
