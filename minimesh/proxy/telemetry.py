"""Istio's standard metrics (istio_requests_total, ...) and the peer metadata exchange that fills them.

Istio's sidecars tell each other who they are in the `x-envoy-peer-metadata` / `x-envoy-peer-metadata-id`
headers (outbound adds them to requests, inbound to responses, each side strips what it reads). Istio puts
a base64 protobuf Struct there; minimesh puts base64 JSON with the same keys (WORKLOAD_NAME, NAMESPACE,
app, version, SERVICE_ACCOUNT). Node metadata (bootstrap `node.metadata`) says who this proxy is.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from minimesh.proxy.accesslog import StreamInfo
from minimesh.proxy.config import NodeInfo
from minimesh.proxy.headers import Headers
from minimesh.proxy.stats import LabeledCounter, LabeledHistogram, Stats

PEER_ID = "x-envoy-peer-metadata-id"
PEER_METADATA = "x-envoy-peer-metadata"
LABELS = ("reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app",
          "source_version", "destination_workload", "destination_workload_namespace", "destination_principal",
          "destination_app", "destination_version", "destination_service", "destination_service_name",
          "destination_service_namespace", "request_protocol", "response_code", "response_flags",
          "connection_security_policy")
TCP_LABELS = ("reporter", "source_workload", "source_workload_namespace", "destination_workload",
              "destination_workload_namespace", "destination_service", "response_flags")
UNKNOWN = "unknown"


class Peer:
    __slots__ = ("app", "namespace", "service_account", "version", "workload")

    def __init__(self, md: Mapping[str, Any]) -> None:
        labels = md.get("LABELS") if isinstance(md.get("LABELS"), Mapping) else {}
        self.workload = str(md.get("WORKLOAD_NAME") or UNKNOWN)
        self.namespace = str(md.get("NAMESPACE") or UNKNOWN)
        self.app = str(md.get("app") or labels.get("app") or UNKNOWN)
        self.version = str(md.get("version") or labels.get("version") or UNKNOWN)
        self.service_account = str(md.get("SERVICE_ACCOUNT") or "")


_NOBODY = Peer({})


class Telemetry:
    def __init__(self, stats: Stats, node: NodeInfo) -> None:
        md = node.metadata
        self.me = Peer(md)
        self.enabled = bool(md.get("WORKLOAD_NAME"))
        payload = {"WORKLOAD_NAME": self.me.workload, "NAMESPACE": self.me.namespace, "app": self.me.app,
                   "version": self.me.version, "SERVICE_ACCOUNT": self.me.service_account}
        self.header_value = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
        self.node_id = node.id or self.me.workload
        self.requests = stats.family(LabeledCounter, "istio_requests_total", LABELS, "Requests seen by the proxy")
        self.duration = stats.family(LabeledHistogram, "istio_request_duration_milliseconds", LABELS,
                                     "Request duration (ms)")
        self.tcp_opened = stats.family(LabeledCounter, "istio_tcp_connections_opened_total", TCP_LABELS,
                                       "TCP connections opened")
        self.tcp_closed = stats.family(LabeledCounter, "istio_tcp_connections_closed_total", TCP_LABELS,
                                       "TCP connections closed")
        self.tcp_sent = stats.family(LabeledCounter, "istio_tcp_sent_bytes_total", TCP_LABELS, "Bytes sent")
        self.tcp_received = stats.family(LabeledCounter, "istio_tcp_received_bytes_total", TCP_LABELS,
                                         "Bytes received")
        self._peers: dict[str, Peer] = {}

    def add_own(self, headers: Headers) -> None:
        if self.enabled:
            headers.set(PEER_ID, self.node_id)
            headers.set(PEER_METADATA, self.header_value)

    def take_peer(self, headers: Headers) -> Peer | None:
        """Read and remove the peer's metadata headers."""
        raw = headers.get(PEER_METADATA)
        if raw is None:
            return None
        headers.remove(PEER_METADATA)
        headers.remove(PEER_ID)
        peer = self._peers.get(raw)
        if peer is None:
            try:
                md = json.loads(base64.b64decode(raw, validate=True))
            except (ValueError, binascii.Error):
                return None
            if not isinstance(md, dict):
                return None
            peer = Peer(md)
            if len(self._peers) < 10_000:
                self._peers[raw] = peer
        return peer

    def record_http(self, direction: str, info: StreamInfo, peer: Peer | None, service: str,
                    principal: str | None, mtls: bool) -> None:
        inbound = direction == "INBOUND"
        src = (peer or _NOBODY) if inbound else self.me
        dst = self.me if inbound else (peer or _NOBODY)
        name, _, rest = service.partition(".")
        ns = rest.partition(".")[0] if rest else (dst.namespace if dst is not _NOBODY else UNKNOWN)
        labels = ("destination" if inbound else "source", src.workload, src.namespace,
                  principal or UNKNOWN if inbound else UNKNOWN, src.app, src.version, dst.workload, dst.namespace,
                  UNKNOWN, dst.app, dst.version, service or UNKNOWN, name or UNKNOWN, ns or UNKNOWN, "http",
                  str(info.response_code), info.flags_text(),
                  ("mutual_tls" if mtls else "none") if inbound else UNKNOWN)
        self.requests.inc(labels)
        self.duration.record(labels, info.duration_ms)

    def record_tcp(self, direction: str, info: StreamInfo, service: str, opened: bool) -> None:
        inbound = direction == "INBOUND"
        src = _NOBODY if inbound else self.me
        dst = self.me if inbound else _NOBODY
        labels = ("destination" if inbound else "source", src.workload, src.namespace, dst.workload, dst.namespace,
                  service or UNKNOWN, info.flags_text())
        if opened:
            self.tcp_opened.inc(labels)
            return
        self.tcp_closed.inc(labels)
        self.tcp_sent.inc(labels, info.bytes_sent)
        self.tcp_received.inc(labels, info.bytes_received)
