"""HTTP/1.1 without I/O (in the spirit of h11), on httptools' llhttp parser.

`RequestParser.feed(bytes)` / `ResponseParser.feed(bytes)` return events: a head (`RequestHead` /
`ResponseHead`), body `bytes` (already de-chunked), and `END` when the message is complete. Protocol errors
raise `HttpError(status, details)` carrying the status Envoy would answer with (400, 431, 413).
Serialisation helpers build heads and chunked framing for the other side.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools

from minimesh.proxy.headers import Headers


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = _End()
_REASONS = {100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
            301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class HttpError(Exception):
    """A message we cannot accept; `status` is what to answer (downstream) and `details` says why."""

    def __init__(self, status: int, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.details = details


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str  # origin-form path with query, as sent ("/a/b?x=1")
    version: str  # "1.1" / "1.0"
    headers: Headers
    keep_alive: bool
    chunked: bool
    content_length: int | None
    upgrade: bool = False

    @property
    def authority(self) -> str:
        return self.headers.get("host") or ""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: str
    version: str
    headers: Headers
    keep_alive: bool = True
    chunked: bool = False
    content_length: int | None = None
    no_body: bool = False  # HEAD response, 1xx/204/304: nothing follows the head


def _framing(headers: Headers) -> tuple[bool, int | None, str | None]:
    """(chunked, content_length, error) from Transfer-Encoding / Content-Length."""
    te = None
    cl: list[str] = []
    for k, v in headers.items():
        if k == "content-length":
            cl.append(v)
        elif k == "transfer-encoding":
            te = v if te is None else f"{te},{v}"
    if te is None:
        if not cl:
            return False, None, None
        if len(cl) == 1 and cl[0].isdigit():  # the common case
            return False, int(cl[0]), None
    chunked = bool(te) and te.replace(" ", "").lower().split(",")[-1] == "chunked"
    if te and not chunked:
        return False, None, f"unsupported transfer-encoding {te!r}"
    if cl:
        if chunked:
            return False, None, "both content-length and transfer-encoding"
        values = {v.strip() for c in cl for v in c.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            return False, None, f"bad content-length {','.join(cl)!r}"
        return False, int(next(iter(values))), None
    return chunked, None, None


class _Base:
    __slots__ = ("_events", "_head_bytes", "_in_head", "_max_head", "_parser", "_pending", "_raw",
                 "_status_text", "_url")

    def __init__(self, max_head_bytes: int) -> None:
        self._max_head = max_head_bytes
        self._events: list[object] = []
        self._pending = 0  # bytes fed since the head started (bounds a head that never ends)
        self._reset_head()

    def _reset_head(self) -> None:
        self._raw: list[tuple[bytes, bytes]] = []
        self._url = b""
        self._status_text = b""
        self._head_bytes = 0
        self._in_head = True

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset_head()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)

    def on_status(self, status: bytes) -> None:
        self._status_text += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))  # decoded once the head is complete (hot path: keep this tiny)

    def _take_headers(self) -> Headers:
        raw = self._raw
        self._raw = []
        size = self._head_bytes
        for n, v in raw:
            size += len(n) + len(v) + 4
        self._head_bytes = size
        # llhttp drops the whitespace before a value, not after it
        return Headers([(n.decode("latin-1").lower(),
                         (v.rstrip(b" \t") if v and v[-1] in (32, 9) else v).decode("latin-1")) for n, v in raw])

    def on_body(self, body: bytes) -> None:
        self._events.append(body)

    def on_message_complete(self) -> None:
        self._events.append(END)
        self._in_head = True  # the bytes that follow belong to the next head


class RequestParser(_Base):
    """Downstream requests. `max_head_bytes` is Envoy's max_request_headers_kb (431 when exceeded)."""

    __slots__ = ("_failed",)

    def __init__(self, max_head_bytes: int = 60 * 1024) -> None:
        super().__init__(max_head_bytes)
        self._failed: HttpError | None = None
        self._parser = httptools.HttpRequestParser(self)

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers = self._take_headers()
        self._pending = 0
        if self._head_bytes > self._max_head:
            raise HttpError(431, "request_headers_too_large")
        p = self._parser
        chunked, length, err = _framing(headers)
        if err:
            raise HttpError(400, f"http1.codec_error: {err}")
        method = p.get_method().decode()
        version = p.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HttpError(400, f"http1.codec_error: HTTP/{version} not supported")
        if version == "1.1" and "host" not in headers:
            raise HttpError(400, "http1.codec_error: missing host header")
        target = self._url.decode("latin-1")
        if not target.startswith("/") and not (method == "OPTIONS" and target == "*"):
            # absolute-form (a forward-proxy request): keep only the path, Host comes from the URL
            try:
                url = httptools.parse_url(self._url)
            except httptools.HttpParserInvalidURLError:
                raise HttpError(400, f"http1.codec_error: bad request target {target[:100]!r}") from None
            if url.host is None:
                raise HttpError(400, f"http1.codec_error: bad request target {target[:100]!r}")
            target = (url.path or b"/").decode("latin-1") + (f"?{url.query.decode('latin-1')}" if url.query else "")
            host = url.host.decode("latin-1") + (f":{url.port}" if url.port else "")
            headers.set("host", host)
        self._events.append(RequestHead(method, target, version, headers, p.should_keep_alive(), chunked, length,
                                        p.should_upgrade()))

    def feed(self, data: bytes) -> list[object]:
        """Parse `data`; return the events it completes.

        A protocol error raises HttpError, unless requests completed before it in the same data: then
        those events come first and the HttpError is the last event (answer them, then the error).
        """
        self._events = []
        if self._failed is not None:
            raise self._failed
        if self._in_head:
            self._pending += len(data)
        err: HttpError | None = None
        try:
            self._parser.feed_data(data)
        except HttpError as e:
            err = e
        except httptools.HttpParserUpgrade:
            pass  # head already emitted with upgrade=True; the connection manager refuses it
        except httptools.HttpParserError as e:
            cause = e.__context__
            err = cause if isinstance(cause, HttpError) else HttpError(400, f"http1.codec_error: {e}")
        if err is None and self._in_head and self._pending > self._max_head + 8192:
            err = HttpError(431, "request_headers_too_large")
        if err is not None:
            self._failed = err
            if END not in self._events:
                raise err
            while self._events[-1] is not END:  # drop the parts of the broken message
                self._events.pop()
            self._events.append(err)
        return self._events


class ResponseParser(_Base):
    """Upstream responses to one request (`method` decides whether a body can follow)."""

    __slots__ = ("_broken", "_done", "_interim", "_method")

    def __init__(self, method: str = "GET", max_head_bytes: int = 60 * 1024) -> None:
        super().__init__(max_head_bytes)
        self._method = method
        self._done = False
        self._broken = False
        self._interim = False
        self._parser = httptools.HttpResponseParser(self)

    def reset(self, method: str) -> None:
        """Get ready for the next response on the same keep-alive connection."""
        self._method = method
        self._interim = False

    @property
    def reusable(self) -> bool:
        """False after a HEAD response (llhttp still waits for its body) or an error."""
        return not self._done and not self._broken

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers = self._take_headers()
        self._pending = 0
        if self._head_bytes > self._max_head:
            raise HttpError(502, "upstream response headers too large")
        p = self._parser
        status = p.get_status_code()
        self._interim = 100 <= status < 200
        if self._interim:
            return  # interim response (100 Continue): skipped, the final one follows
        chunked, length, err = _framing(headers)
        if err:
            raise HttpError(502, f"protocol_error: {err}")
        no_body = self._method == "HEAD" or status in (204, 304)
        self._events.append(ResponseHead(status, self._status_text.decode("latin-1"), p.get_http_version(),
                                         headers, p.should_keep_alive(), chunked, length, no_body))
        if self._method == "HEAD":
            self._done = True  # llhttp would wait for a body; the message ends here

    def on_message_complete(self) -> None:
        if not self._done and not self._interim:
            self._events.append(END)
        self._interim = False
        self._in_head = True

    def feed(self, data: bytes) -> list[object]:
        self._events = []
        if self._done:
            raise HttpError(502, "protocol_error: data after the end of the response")
        if self._in_head:
            self._pending += len(data)
        try:
            self._parser.feed_data(data)
        except HttpError:
            self._broken = True
            raise
        except httptools.HttpParserError as e:
            self._broken = True
            cause = e.__context__
            if isinstance(cause, HttpError):
                raise cause from None
            raise HttpError(502, f"protocol_error: {e}") from None
        if self._done:
            self._events.append(END)
        elif self._in_head and self._pending > self._max_head + 8192:
            raise HttpError(502, "upstream response headers too large")
        return self._events

    def feed_eof(self, head: ResponseHead | None) -> list[object]:
        """The upstream closed. A close-delimited body ends here; anything else was cut short."""
        self._broken = True
        if head is not None and not head.chunked and head.content_length is None and not head.no_body:
            return [END]
        raise HttpError(503, "upstream connection closed before the end of the response")


# serialisation ------------------------------------------------------------------------------------
def request_head_bytes(method: str, target: str, headers: Headers) -> bytes:
    parts = [f"{method} {target} HTTP/1.1\r\n"]
    parts.extend(f"{k}: {v}\r\n" for k, v in headers.items())
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def response_head_bytes(status: int, reason_text: str, headers: Headers) -> bytes:
    parts = [f"HTTP/1.1 {status} {reason_text or reason(status)}\r\n"]
    parts.extend(f"{k}: {v}\r\n" for k, v in headers.items())
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
