"""The echo server: what it answers (pure) and how it behaves on real sockets."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from minimesh.apps.echo.reply import BadQuery, EchoRequest, Identity, parse_controls, plan, response_bytes

ME = Identity(pod="echo-v2-abc", namespace="default", service="echo", version="v2")
LOOPBACK = ("--host", "127.0.0.1", "--port", "0")


# ---- pure ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "want"),
    [
        ("/", (200, 0.0, None)),
        ("/x?status=503", (503, 0.0, None)),
        ("/x?delay=0.25&status=504", (504, 0.25, None)),
        ("/x?size=10", (200, 0.0, 10)),
        ("/x?status=&delay=", (200, 0.0, None)),
    ],
)
def test_controls_from_the_query(target: str, want: tuple[int, float, int | None]) -> None:
    assert parse_controls(target) == want


@pytest.mark.parametrize(
    ("target", "needle"),
    [("/?status=99", "status='99'"), ("/?status=abc", "status='abc'"), ("/?status=600", "200-599"),
     ("/?delay=x", "delay='x'"), ("/?delay=-1", "0-60"), ("/?delay=61", "0-60"), ("/?size=-3", "size='-3'")],
)
def test_bad_controls_say_which_and_why(target: str, needle: str) -> None:
    with pytest.raises(BadQuery, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_controls(target)
    p = plan(EchoRequest("GET", target, "1.1"), ME)
    assert p.status == 400 and needle.split("=")[0] in json.loads(p.body)["error"]


def test_the_echo_document() -> None:
    req = EchoRequest("POST", "/a/b?c=1", "1.1", [("Host", "echo"), ("X-A", "1"), ("x-a", "2")], 5, "10.0.0.1:5", "10.0.0.2:8080")
    doc = json.loads(plan(req, ME).body)
    assert doc == {
        "method": "POST", "path": "/a/b", "query": "c=1", "http_version": "1.1",
        "headers": {"host": "echo", "x-a": "1,2"}, "body_bytes": 5, "peer": "10.0.0.1:5", "local": "10.0.0.2:8080",
        "pod": "echo-v2-abc", "namespace": "default", "service": "echo", "version": "v2",
    }


def test_response_bytes_frame_the_body() -> None:
    p = plan(EchoRequest("GET", "/?size=3&status=201", "1.1"), ME)
    raw = response_bytes(p, ME, keep_alive=False)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 201 Created\r\n") and b"content-length: 3" in head
    assert b"connection: close" in head and b"x-echo-pod: echo-v2-abc" in head and b"x-echo-version: v2" in head
    assert body == b"xxx"
    assert response_bytes(p, ME, keep_alive=True, head_only=True).endswith(b"\r\n\r\n")


# ---- real server --------------------------------------------------------------------------------------
def _read_response(sock: socket.socket, buf: bytearray) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 response from `sock` (content-length framed), leftovers stay in `buf`."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed mid-response: {bytes(buf)!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    buf[:] = rest[length:]
    return lines[0], headers, rest[:length]


@pytest.fixture
def echo(start):  # type: ignore[no-untyped-def]
    return start("minimesh.apps.echo", *LOOPBACK, "--access-log",
                 env={"POD_NAME": "echo-1", "SERVICE_VERSION": "v7", "POD_NAMESPACE": "ns1"})


def _connect(app) -> socket.socket:  # type: ignore[no-untyped-def]
    return socket.create_connection((app.host, app.port), timeout=5)


def test_keep_alive_serves_many_requests_on_one_connection(echo) -> None:  # type: ignore[no-untyped-def]
    with _connect(echo) as s:
        buf = bytearray()
        ports = set()
        for i in range(50):
            s.sendall(f"GET /n/{i} HTTP/1.1\r\nHost: echo\r\nX-Request-Id: r{i}\r\n\r\n".encode())
            status, headers, body = _read_response(s, buf)
            doc = json.loads(body)
            assert status == "HTTP/1.1 200 OK" and headers["connection"] == "keep-alive"
            assert doc["path"] == f"/n/{i}" and doc["headers"]["x-request-id"] == f"r{i}"
            assert doc["pod"] == "echo-1" and doc["version"] == "v7" and doc["namespace"] == "ns1"
            ports.add(doc["peer"])
        assert len(ports) == 1


def test_pipelined_answers_keep_request_order_even_when_delayed(echo) -> None:  # type: ignore[no-untyped-def]
    with _connect(echo) as s:
        s.sendall(b"GET /first?delay=0.3 HTTP/1.1\r\nHost: e\r\n\r\nGET /second HTTP/1.1\r\nHost: e\r\n\r\n"
                  b"GET /third?status=503 HTTP/1.1\r\nHost: e\r\n\r\n")
        buf = bytearray()
        t0 = time.monotonic()
        answers = [_read_response(s, buf) for _ in range(3)]
        assert time.monotonic() - t0 >= 0.29
    assert [json.loads(b)["path"] for _, _, b in answers] == ["/first", "/second", "/third"]
    assert [a[0] for a in answers] == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 503 Service Unavailable"]


def test_chunked_and_expect_continue_bodies_are_counted(echo) -> None:  # type: ignore[no-untyped-def]
    with _connect(echo) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        buf = bytearray()
        _, _, body = _read_response(s, buf)
        assert json.loads(body)["body_bytes"] == 11
        s.sendall(b"PUT /up HTTP/1.1\r\nHost: e\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        status, _, _ = _read_response(s, buf)
        assert status == "HTTP/1.1 100 Continue"
        s.sendall(b"abcd")
        _, _, body = _read_response(s, buf)
        assert json.loads(body)["body_bytes"] == 4 and json.loads(body)["method"] == "PUT"


def test_connection_close_and_http10_close_after_the_answer(echo) -> None:  # type: ignore[no-untyped-def]
    for request in (b"GET / HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"):
        with _connect(echo) as s:
            s.sendall(request)
            buf = bytearray()
            _, headers, _ = _read_response(s, buf)
            assert headers["connection"] == "close"
            assert s.recv(10) == b""


def test_head_has_no_body_and_size_shapes_the_body(echo) -> None:  # type: ignore[no-untyped-def]
    with _connect(echo) as s:
        s.sendall(b"GET /?size=100000 HTTP/1.1\r\nHost: e\r\n\r\n")
        buf = bytearray()
        _, headers, body = _read_response(s, buf)
        assert headers["content-type"] == "application/octet-stream" and body == b"x" * 100000
        s.sendall(b"HEAD /?size=5 HTTP/1.1\r\nHost: e\r\n\r\nGET /after HTTP/1.1\r\nHost: e\r\n\r\n")
        raw = bytearray()
        while raw.count(b"\r\n\r\n") < 2 or not raw.endswith(b"}"):
            raw += s.recv(65536)
        assert raw.startswith(b"HTTP/1.1 200 OK") and b"content-length: 5\r\n" in raw
        assert raw.split(b"\r\n\r\n", 1)[1].startswith(b"HTTP/1.1 200 OK")  # no body after the HEAD answer


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, "400"),
        (b"GET / HTTP/1.1\r\nHost: e\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", "431"),
        (b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "400"),
    ],
)
def test_garbage_gets_a_clean_error_and_the_server_lives_on(echo, payload: bytes, status: str) -> None:  # type: ignore[no-untyped-def]
    with _connect(echo) as s:
        s.sendall(payload)
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(f"HTTP/1.1 {status} ".encode()) and b'"error"' in data
    with _connect(echo) as s:  # still serving
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: e\r\n\r\n")
        assert _read_response(s, bytearray())[0] == "HTTP/1.1 200 OK"


def test_access_log_and_prompt_stop(echo) -> None:  # type: ignore[no-untyped-def]
    with _connect(echo) as s:
        s.sendall(b"GET /logged?status=418 HTTP/1.1\r\nHost: e\r\n\r\n")
        _read_response(s, bytearray())
    assert '"GET /logged?status=418 HTTP/1.1" 418' in echo.wait_for_line("/logged")
    assert echo.stop(signal.SIGTERM) == 0


def test_several_ports(start) -> None:  # type: ignore[no-untyped-def]
    app = start("minimesh.apps.echo", "--host", "127.0.0.1", "--port", "0", "--port", "0")
    line = app.wait_for_line("listening on")
    ports = [int(part.rsplit(":", 1)[1]) for part in line.split("listening on ")[1].split(", ")]
    assert len(set(ports)) == 2
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: e\r\n\r\n")
            _, _, body = _read_response(s, bytearray())
            assert json.loads(body)["local"] == f"127.0.0.1:{port}"
