"""gRPC's wire framing over HTTP/2 (pure): length-prefixed messages and the status trailers.

A gRPC message on an HTTP/2 stream is 1 byte "compressed" flag + 4 bytes big-endian length + the
protobuf bytes; a call ends with trailers `grpc-status` (0 = OK) and `grpc-message` (percent-encoded).
See https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md.
"""

from __future__ import annotations

import enum
import struct
from urllib.parse import unquote

PREFIX = struct.Struct(">BI")
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class GrpcError(Exception):
    """A call that ended with a non-OK status (or a transport failure mapped to one)."""

    def __init__(self, code: int, message: str) -> None:
        try:
            self.code: StatusCode | int = StatusCode(code)
        except ValueError:
            self.code = code
        self.message = message
        name = self.code.name if isinstance(self.code, StatusCode) else str(code)
        super().__init__(f"grpc status {name}: {message}")


def encode_message(payload: bytes) -> bytes:
    """Frame one uncompressed message."""
    return PREFIX.pack(0, len(payload)) + payload


class MessageDecoder:
    """Turns the bytes of DATA frames (any split) back into messages."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= PREFIX.size:
            flag, length = PREFIX.unpack_from(self._buf)
            if flag not in (0, 1):
                raise GrpcError(StatusCode.INTERNAL, f"bad gRPC frame: compressed flag {flag}, want 0 or 1")
            if flag == 1:
                # We never advertise grpc-accept-encoding, so a compressed message is a protocol error.
                raise GrpcError(StatusCode.INTERNAL, "compressed gRPC message, but no compression was negotiated")
            if length > self._max:
                raise GrpcError(StatusCode.RESOURCE_EXHAUSTED, f"message of {length} bytes exceeds limit {self._max}")
            end = PREFIX.size + length
            if len(self._buf) < end:
                break
            out.append(bytes(self._buf[PREFIX.size:end]))
            del self._buf[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message still buffered (non-zero at end of stream = truncated)."""
        return len(self._buf)


def status_from_headers(headers: dict[str, str]) -> GrpcError | None:
    """The call's outcome from trailers (or a trailers-only response); None while there is no status."""
    raw = headers.get("grpc-status")
    if raw is None:
        return None
    try:
        code = int(raw)
    except ValueError:
        return GrpcError(StatusCode.UNKNOWN, f"bad grpc-status {raw!r}")
    return GrpcError(code, unquote(headers.get("grpc-message", "")))
