"""Which protocol a Service port speaks, decided as Istio does ("explicit protocol selection").

`appProtocol` wins; otherwise the port name's prefix before the first `-` (`http`, `http-web`, `grpc`,
`tcp-db`). Istio sniffs the first bytes of unnamed ports ("auto"); minimesh does not sniff and treats
them as TCP, so name your ports. UDP ports are not proxied (Envoy sidecars do not capture UDP).
"""

from __future__ import annotations

import enum

from minimesh.pilot.model import ServicePort


class Protocol(enum.Enum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    TCP = "TCP"
    TLS = "TLS"  # TLS that the mesh passes through (https, tls)
    UDP = "UDP"

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC)


_BY_NAME = {
    "http": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "h2c": Protocol.HTTP2,
    "grpc": Protocol.GRPC,
    "grpc-web": Protocol.GRPC,
    "https": Protocol.TLS,
    "tls": Protocol.TLS,
    "tcp": Protocol.TCP,
    "mongo": Protocol.TCP,
    "mysql": Protocol.TCP,
    "redis": Protocol.TCP,
}
_BY_APP_PROTOCOL = {**_BY_NAME, "kubernetes.io/h2c": Protocol.HTTP2, "kubernetes.io/ws": Protocol.HTTP,
                    "kubernetes.io/wss": Protocol.TLS}


def detect_protocol(port: ServicePort) -> Protocol:
    if port.protocol.upper() == "UDP":
        return Protocol.UDP
    if port.app_protocol:
        found = _BY_APP_PROTOCOL.get(port.app_protocol.lower())
        if found is not None:
            return found
    prefix = port.name.lower().split("-", 1)[0]
    if port.name.lower().startswith("grpc-web"):
        return Protocol.GRPC
    return _BY_NAME.get(prefix, Protocol.TCP)
