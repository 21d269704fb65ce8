"""mitmproxy addon (loaded by `mitmdump -s`): write what the man in the middle could read, one JSON line per
event, to the file named by the option `minimesh_flows`.

    {"event": "request", "method": "GET", "path": "/details/0", "host": "details:9080", ...}
    {"event": "tls_failed_client", "sni": "outbound_.9080_._.details...", "error": "..."}

Only this process imports mitmproxy; the mesh never does.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mitmproxy import ctx, http, tcp, tls


class Recorder:
    def load(self, loader: Any) -> None:
        loader.add_option("minimesh_flows", str, "", "JSON-lines file for what the man in the middle saw")

    def _write(self, event: str, **fields: Any) -> None:
        path = ctx.options.minimesh_flows
        if not path:
            return
        with open(path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), "event": event, **fields}) + "\n")

    def running(self) -> None:
        self._write("running")

    def request(self, flow: http.HTTPFlow) -> None:
        r = flow.request
        self._write("request", method=r.method, path=r.path, host=r.host_header or "", http_version=r.http_version,
                    client=list(flow.client_conn.peername or ()), server=list(flow.server_conn.address or ()),
                    tls=flow.client_conn.tls_established, headers=dict(r.headers.items()))

    def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        self._write("response", status=flow.response.status_code, path=flow.request.path,
                    body=flow.response.get_text(strict=False)[:200] if flow.response.content else "")

    def tls_established_client(self, data: tls.TlsData) -> None:
        self._write("tls_established_client", sni=data.conn.sni, alpn=_alpn(data.conn.alpn))

    def tls_failed_client(self, data: tls.TlsData) -> None:
        self._write("tls_failed_client", sni=data.conn.sni, error=str(data.conn.error or ""),
                    client=list(data.context.client.peername or ()))

    def tls_failed_server(self, data: tls.TlsData) -> None:
        self._write("tls_failed_server", sni=data.conn.sni, error=str(data.conn.error or ""))

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        m = flow.messages[-1]
        self._write("tcp_message", from_client=m.from_client, size=len(m.content), preview=m.content[:64].hex())


def _alpn(value: bytes | None) -> str:
    return value.decode("ascii", "replace") if value else ""


addons = [Recorder()]
