"""Access log: one line per HTTP request or TCP connection, in Istio's text format (1.8 onwards).

  [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
  %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
  %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
  "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
  %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
  %REQUESTED_SERVER_NAME% %ROUTE_NAME% %DOWNSTREAM_PEER_URI_SAN%

(Istio's format, and the client's SPIFFE id when it came over mTLS; one line. The details say why: `via_upstream`,
`route_not_found`, `rbac_access_denied_matched_policy[ns[default]-policy[x]-rule[0]]`, ...) Lines go to stdout (so
`kubectl logs -c minimesh-proxy` shows them), flushed every 0.2 s (one write for many lines), and the last N records
stay in a ring buffer for the admin API (`/access_log`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from typing import IO, Any

# Envoy's response flags (short names) in the order Envoy prints them.
FLAG_ORDER = ("LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
              "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
              "RBAC")


FLUSH_INTERVAL = 0.2  # seconds


class StreamInfo:
    """What happened to one request (or TCP connection): everything the access log and stats need."""

    __slots__ = ("attempts", "authority", "bytes_received", "bytes_sent", "details", "downstream_local",
                 "downstream_remote", "duration_ms", "flags", "method", "path", "peer_uri_san", "peer_workload",
                 "protocol", "request_id", "response_code", "route_name", "sni", "start_mono", "start_time",
                 "termination", "upstream_cluster", "upstream_host", "upstream_local", "upstream_service_time",
                 "user_agent", "x_forwarded_for")

    def __init__(self, downstream_local: str, downstream_remote: str, sni: str = "") -> None:
        self.start_time = time.time()
        self.start_mono = time.monotonic()
        self.method = self.path = self.protocol = ""
        self.response_code = 0
        self.flags: list[str] = []
        self.details = ""  # %RESPONSE_CODE_DETAILS%
        self.termination = ""  # %CONNECTION_TERMINATION_DETAILS% (a connection the proxy closed, e.g. network RBAC)
        self.bytes_received = 0
        self.bytes_sent = 0
        self.duration_ms = 0
        self.upstream_service_time: int | None = None
        self.x_forwarded_for = self.user_agent = self.request_id = self.authority = ""
        self.upstream_host = self.upstream_cluster = self.upstream_local = ""
        self.downstream_local = downstream_local
        self.downstream_remote = downstream_remote
        self.sni = sni
        self.route_name = ""
        self.attempts = 0
        self.peer_workload: tuple[str, str] | None = None
        self.peer_uri_san = ""  # the mTLS client's URI SAN (spiffe://...), set by the listener's network filter

    def add_flag(self, flag: str) -> None:
        if flag and flag not in self.flags:
            self.flags.append(flag)

    def flags_text(self) -> str:
        if not self.flags:
            return "-"
        return ",".join(sorted(self.flags, key=lambda f: FLAG_ORDER.index(f) if f in FLAG_ORDER else 99))

    def finish(self) -> None:
        self.duration_ms = int((time.monotonic() - self.start_mono) * 1000)

    def to_dict(self) -> dict[str, Any]:
        return {"start_time": format_time(self.start_time), "method": self.method or None,
                "path": self.path or None, "protocol": self.protocol or None, "response_code": self.response_code,
                "response_flags": self.flags_text(), "response_code_details": self.details or None,
                "connection_termination_details": self.termination or None,
                "bytes_received": self.bytes_received, "bytes_sent": self.bytes_sent, "duration": self.duration_ms,
                "upstream_service_time": self.upstream_service_time, "x_forwarded_for": self.x_forwarded_for or None,
                "user_agent": self.user_agent or None, "request_id": self.request_id or None,
                "authority": self.authority or None, "upstream_host": self.upstream_host or None,
                "upstream_cluster": self.upstream_cluster or None, "upstream_local_address": self.upstream_local or None,
                "downstream_local_address": self.downstream_local, "downstream_remote_address": self.downstream_remote,
                "requested_server_name": self.sni or None, "route_name": self.route_name or None,
                "downstream_peer_uri_san": self.peer_uri_san or None,
                "attempts": self.attempts}


_time_cache: tuple[int, str] = (-1, "")


def format_time(t: float) -> str:
    """2024-05-01T12:00:00.123Z (Envoy's %START_TIME%)."""
    global _time_cache
    sec = int(t)
    if _time_cache[0] != sec:
        _time_cache = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{_time_cache[1]}.{int((t - sec) * 1000):03d}Z"


def format_line(i: StreamInfo) -> str:
    req = f'"{i.method} {i.path} {i.protocol}"' if i.method else '"- - -"'
    ust = i.upstream_service_time
    return (f'[{format_time(i.start_time)}] {req} {i.response_code} {i.flags_text()} {i.details or "-"} '
            f'{i.termination or "-"} "-" {i.bytes_received} '
            f'{i.bytes_sent} {i.duration_ms} {"-" if ust is None else ust} "{i.x_forwarded_for or "-"}" '
            f'"{i.user_agent or "-"}" "{i.request_id or "-"}" "{i.authority or "-"}" "{i.upstream_host or "-"}" '
            f'{i.upstream_cluster or "-"} {i.upstream_local or "-"} {i.downstream_local or "-"} '
            f'{i.downstream_remote or "-"} {i.sni or "-"} {i.route_name or "-"} {i.peer_uri_san or "-"}\n')


class AccessLog:
    def __init__(self, path: str = "/dev/stdout", ring_size: int = 1000) -> None:
        self.ring: deque[StreamInfo] = deque(maxlen=ring_size or None) if ring_size else deque(maxlen=0)
        self._out: IO[str] | None = None
        if path in ("/dev/stdout", "-"):
            self._out = sys.stdout
        elif path:
            self._out = open(path, "a", buffering=1 << 16)  # noqa: SIM115 (lives as long as the proxy)
        self._pending: list[str] = []
        self._flush_scheduled = False

    def log(self, info: StreamInfo) -> None:
        self.ring.append(info)
        if self._out is None:
            return
        self._pending.append(format_line(info))
        if len(self._pending) >= 512:
            self.flush()
        elif not self._flush_scheduled:
            # Envoy flushes access logs once a second (file_flush_interval); we do it a bit more often
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out is None or not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self._out.write("".join(lines))
            self._out.flush()
        except (OSError, ValueError):
            pass  # stdout gone (pipe closed): keep serving, the ring buffer still has the records

    def recent(self, n: int | None = None) -> list[StreamInfo]:
        items = list(self.ring)
        return items[-n:] if n else items
