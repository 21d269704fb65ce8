"""Traffic makers for the capture tests, run as processes inside the test's network namespaces.

python peers.py tls-server --cert C --key K --port 9443 [--alpn http/1.1]
python peers.py tls-client --host IP --port 9443 --sni NAME --alpn h2,http/1.1 --path /details
python peers.py split-http --host IP --port 9080 --path /details --hostname details
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import time


def tls_server(a: argparse.Namespace) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(a.alpn.split(","))
    with socket.create_server(("0.0.0.0", a.port), reuse_port=False) as srv:
        print("listening", flush=True)
        while True:
            conn, _ = srv.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    body = b'{"id": 0, "author": "William Shakespeare"}'
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                        + str(len(body)).encode()
                        + b"\r\nconnection: close\r\n\r\n"
                        + body
                    )
            except (ssl.SSLError, OSError) as e:
                print(f"tls error: {e}", flush=True)


def tls_client(a: argparse.Namespace) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the sniffer test is about what is on the wire, not about trust
    ctx.set_alpn_protocols(a.alpn.split(","))
    if a.max_tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((a.host, a.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=a.sni) as tls,
    ):
        tls.sendall(f"GET {a.path} HTTP/1.1\r\nHost: {a.sni}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        print(tls.selected_alpn_protocol(), tls.version(), data.split(b"\r\n", 1)[0].decode(), flush=True)


def split_http(a: argparse.Namespace) -> None:
    """One HTTP request whose request line is split over two TCP segments."""
    with socket.create_connection((a.host, a.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = f"GET {a.path} HTTP/1.1\r\nHost: {a.hostname}\r\nUser-Agent: split\r\n\r\n".encode()
        s.sendall(head[:7])
        time.sleep(0.2)  # make the kernel send the first part on its own
        s.sendall(head[7:])
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        print(data.split(b"\r\n", 1)[0].decode(), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["tls-server", "tls-client", "split-http"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--alpn", default="http/1.1")
    ap.add_argument("--sni", default="")
    ap.add_argument("--path", default="/")
    ap.add_argument("--hostname", default="localhost")
    ap.add_argument("--max-tls", choices=["1.2", "1.3"], default="1.3")
    a = ap.parse_args()
    {"tls-server": tls_server, "tls-client": tls_client, "split-http": split_http}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
