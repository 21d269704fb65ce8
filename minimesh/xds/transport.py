"""One gRPC bidirectional-streaming call over HTTP/2 (`h2`) on asyncio streams, optionally TLS.

grpcio costs ~20 MB of RSS; the proxy has 40 MB in total, so its xDS client speaks gRPC itself: h2 does
the HTTP/2 framing, flow control and HPACK; this module adds the gRPC request headers, the
length-prefixed messages (`framing.py`) and turns the status trailers into `GrpcError`.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from minimesh.xds.framing import GrpcError, MessageDecoder, StatusCode, encode_message, status_from_headers

USER_AGENT = "minimesh-xds/0.1"
# Big receive windows: a full CDS/EDS push can be hundreds of KB, and acknowledging every 64 KB would
# cost a round trip each.
RECEIVE_WINDOW = 16 * 1024 * 1024


class StreamClosed(GrpcError):
    """The call is over (status trailers, reset, or the connection is gone)."""


class GrpcStream:
    """A single streaming call on its own connection. Use `open()`, then `send()` / `recv()`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: h2.connection.H2Connection, stream_id: int, max_message: int) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self._sid = stream_id
        self._decoder = MessageDecoder(max_message)
        self._inbox: deque[bytes] = deque()
        self._arrived = asyncio.Event()
        self._window = asyncio.Event()
        self._closed: StreamClosed | None = None
        self._headers: dict[str, str] = {}
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
        connect_timeout: float = 5.0,
        max_message: int = 64 * 1024 * 1024,
        unix_path: str | None = None,
    ) -> GrpcStream:
        """Open the call; `unix_path`: over a unix socket instead of host:port (the agent's SDS server)."""
        if ssl is not None:
            ssl.set_alpn_protocols(["h2"])
        if unix_path is not None:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(unix_path), connect_timeout)
        else:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl, server_hostname=server_hostname if ssl else None),
                connect_timeout,
            )
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW})
        conn.increment_flow_control_window(RECEIVE_WINDOW)
        sid = conn.get_next_available_stream_id()
        authority = "localhost" if unix_path is not None else f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        conn.send_headers(sid, [
            (":method", "POST"),
            (":scheme", "https" if ssl else "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", USER_AGENT),
            *metadata,
        ])
        writer.write(conn.data_to_send())
        stream = cls(reader, writer, conn, sid, max_message)
        try:
            await asyncio.wait_for(writer.drain(), connect_timeout)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def send(self, payload: bytes) -> None:
        await self.send_many([payload])

    async def send_many(self, payloads: list[bytes]) -> None:
        """Send messages in order, flushed with as few writes as flow control allows."""
        if not payloads:
            return
        data = memoryview(b"".join(encode_message(p) for p in payloads))
        while data:
            self._raise_if_closed()
            try:
                window = self._conn.local_flow_control_window(self._sid)
            except h2.exceptions.StreamClosedError:
                raise StreamClosed(StatusCode.UNAVAILABLE, "stream closed by the server") from None
            size = min(window, self._conn.max_outbound_frame_size, len(data))
            if size <= 0:
                await self._flush()  # what fits is on its way; wait for the server to open the window
                self._window.clear()
                await self._window.wait()
                continue
            self._conn.send_data(self._sid, bytes(data[:size]))
            data = data[size:]
        await self._flush()

    async def recv(self) -> bytes:
        """The next message; raises StreamClosed (with the server's status) when the call ends."""
        while not self._inbox:
            self._raise_if_closed()
            self._arrived.clear()
            await self._arrived.wait()
        return self._inbox.popleft()

    def recv_nowait(self) -> bytes | None:
        """The next message if one has already arrived, else None."""
        return self._inbox.popleft() if self._inbox else None

    async def close(self) -> None:
        if self._closed is None:
            self._closed = StreamClosed(StatusCode.CANCELLED, "closed by the client")
            try:
                self._conn.close_connection()
                self._writer.write(self._conn.data_to_send())
            except (h2.exceptions.ProtocolError, OSError, RuntimeError):
                pass
        self._read_task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ssl_module.SSLError):
            pass
        self._arrived.set()
        self._window.set()

    # ---- internals ---------------------------------------------------------------------------

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise self._closed

    async def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    def _finish(self, err: StreamClosed) -> None:
        if self._closed is None:
            self._closed = err
        self._arrived.set()
        self._window.set()

    async def _read_loop(self) -> None:
        try:
            while self._closed is None:
                data = await self._reader.read(256 * 1024)
                if not data:
                    raise StreamClosed(StatusCode.UNAVAILABLE, "connection closed by the server")
                for event in self._conn.receive_data(data):
                    self._on_event(event)
                await self._flush()
        except StreamClosed as e:
            self._finish(e)
        except GrpcError as e:
            self._finish(StreamClosed(e.code, e.message))
        except h2.exceptions.ProtocolError as e:
            self._finish(StreamClosed(StatusCode.INTERNAL, f"HTTP/2 protocol error: {e}"))
        except (OSError, ssl_module.SSLError, asyncio.IncompleteReadError) as e:
            self._finish(StreamClosed(StatusCode.UNAVAILABLE, f"connection lost: {e}"))
        except asyncio.CancelledError:
            self._finish(StreamClosed(StatusCode.CANCELLED, "closed by the client"))
            raise

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._headers = dict(event.headers)  # type: ignore[arg-type]
            status = self._headers.get(":status")
            if status != "200":
                raise StreamClosed(StatusCode.UNAVAILABLE, f"HTTP status {status} from the server, want 200")
            ctype = self._headers.get("content-type", "")
            if not ctype.startswith("application/grpc"):
                raise StreamClosed(StatusCode.UNKNOWN, f"content-type {ctype!r} from the server, want application/grpc")
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            messages = self._decoder.feed(event.data)
            if messages:
                self._inbox.extend(messages)
                self._arrived.set()
        elif isinstance(event, h2.events.TrailersReceived):
            self._headers.update(dict(event.headers))  # type: ignore[arg-type]
        elif isinstance(event, h2.events.StreamEnded):
            status = status_from_headers(self._headers)
            if status is None:
                status = GrpcError(StatusCode.INTERNAL, "stream ended without grpc-status")
            elif status.code == StatusCode.OK:
                status = GrpcError(StatusCode.OK, "the server ended the call")
            raise StreamClosed(status.code, status.message)
        elif isinstance(event, h2.events.StreamReset):
            raise StreamClosed(StatusCode.UNAVAILABLE, f"stream reset by the server (HTTP/2 error {event.error_code})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise StreamClosed(StatusCode.UNAVAILABLE, f"server sent GOAWAY (HTTP/2 error {event.error_code})")
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()
