"""Sniff real traffic between two throwaway network namespaces and read it back: stage 6's evidence.

Plain HTTP (`GET /details`) must be visible in the capture; over TLS the same request must not be,
while the ClientHello still shows SNI and ALPN.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from minimesh.capture.analyse import analyse_pcap
from minimesh.capture.tcpdump import CaptureError, start, tcpdump

pytestmark = pytest.mark.cluster

PY = sys.executable
PEERS = str(Path(__file__).with_name("peers.py"))
SNI = "details.default.svc.cluster.local"


def self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pair(netns_support):
    with netns_support.netns_pair("cap") as (a, b):
        yield netns_support, a, b


def test_plaintext_http_is_visible(pair, tmp_path: Path) -> None:
    ns, client, server = pair
    server.diag([9080], "details")
    with tcpdump(tmp_path / "plain.pcap", netns=client.name, bpf_filter="tcp port 9080") as cap:
        got = client.run(["curl", "-sS", "-H", "Host: details:9080", f"http://{ns.B_IP}:9080/details/0"])
        assert got.returncode == 0, got.stderr
        split = client.run(
            [
                PY,
                PEERS,
                "split-http",
                "--host",
                ns.B_IP,
                "--port",
                "9080",
                "--path",
                "/details/1",
                "--hostname",
                "details",
            ]
        )
        assert split.stdout.startswith("HTTP/1.1 200"), split.stderr
    assert cap.stats.get("captured", 0) > 0 and cap.stats.get("dropped_by_kernel", 0) == 0, cap.stats
    report = analyse_pcap(cap.path)
    requests = [(r.method, r.path, r.host, r.src.split(":")[0], r.dst) for r in report.plaintext_requests]
    assert requests == [
        ("GET", "/details/0", "details:9080", ns.A_IP, f"{ns.B_IP}:9080"),
        ("GET", "/details/1", "details", ns.A_IP, f"{ns.B_IP}:9080"),  # request line split over two segments
    ]
    assert [r.status for r in report.http_responses] == [200, 200]
    assert report.tls_flows == []
    assert {(f.proto, f.dst, f.dport) for f in report.flows} >= {("tcp", ns.B_IP, 9080)}
    flow = next(f for f in report.flows if f.dport == 9080)
    assert flow.packets >= 4 and flow.bytes > flow.payload_bytes > 0 and flow.last >= flow.first
    text = report.summary()
    assert "GET /details/0" in text and "plaintext HTTP requests (2)" in text
    assert report.to_dict()["http_requests"][0]["path"] == "/details/0"


def test_tls_hides_the_request_but_shows_sni_and_alpn(pair, tmp_path: Path) -> None:
    ns, client, server = pair
    cert, key = self_signed(tmp_path, SNI)
    server.start(
        [PY, PEERS, "tls-server", "--cert", str(cert), "--key", str(key), "--port", "9443"], ready="listening"
    )
    with tcpdump(tmp_path / "tls.pcap", netns=client.name, bpf_filter="tcp port 9443") as cap:
        got = client.run(
            [
                PY,
                PEERS,
                "tls-client",
                "--host",
                ns.B_IP,
                "--port",
                "9443",
                "--sni",
                SNI,
                "--alpn",
                "h2,http/1.1",
                "--path",
                "/details/0",
            ]
        )
        assert got.stdout.split() == ["http/1.1", "TLSv1.3", "HTTP/1.1", "200", "OK"], got.stdout + got.stderr
    raw = cap.path.read_bytes()
    assert b"GET /details" not in raw and b"Shakespeare" not in raw  # nothing readable on the wire
    report = analyse_pcap(cap.path)
    assert report.plaintext_requests == [] and report.http_responses == []
    (flow,) = report.tls_flows
    assert flow.client.startswith(ns.A_IP + ":") and flow.server == f"{ns.B_IP}:9443"
    assert flow.sni == SNI
    assert flow.alpn == ["h2", "http/1.1"]
    assert flow.version == "TLS 1.3" and "TLS 1.3" in flow.client_versions
    assert {"handshake", "application_data"} <= set(flow.content_types)
    first = flow.records[0]
    assert (first.sender, first.content_type, first.handshake_types) == (
        "client",
        "handshake",
        ["client_hello"],
    )
    assert any(r.sender == "server" and r.handshake_types == ["server_hello"] for r in flow.records)
    assert any(r.sender == "client" and r.content_type == "application_data" for r in flow.records)
    assert f"SNI {SNI}  ALPN h2,http/1.1  version TLS 1.3" in report.summary()


def test_tls12_shows_the_selected_alpn_and_encrypted_finished(pair, tmp_path: Path) -> None:
    ns, client, server = pair
    cert, key = self_signed(tmp_path, SNI)
    server.start(
        [PY, PEERS, "tls-server", "--cert", str(cert), "--key", str(key), "--port", "9444"], ready="listening"
    )
    with tcpdump(tmp_path / "tls12.pcap", netns=client.name, bpf_filter="tcp port 9444") as cap:
        argv = [
            PY,
            PEERS,
            "tls-client",
            "--host",
            ns.B_IP,
            "--port",
            "9444",
            "--sni",
            SNI,
            "--max-tls",
            "1.2",
        ]
        got = client.run([*argv, "--alpn", "h2,http/1.1", "--path", "/details/0"])
        assert got.stdout.split()[:2] == ["http/1.1", "TLSv1.2"], got.stdout + got.stderr
    (flow,) = analyse_pcap(cap.path).tls_flows
    assert (flow.version, flow.alpn_selected, flow.sni) == ("TLS 1.2", "http/1.1", SNI)
    assert "change_cipher_spec" in flow.content_types
    # After ChangeCipherSpec the Finished message is encrypted: seen as a record, not readable.
    assert any(r.handshake_types == ["encrypted"] for r in flow.records)
    assert any("certificate" in r.handshake_types for r in flow.records if r.sender == "server")


def test_tcpdump_errors_are_clear(pair, tmp_path: Path) -> None:
    _, client, _ = pair
    with pytest.raises(CaptureError, match="did not start listening"):
        start(tmp_path / "x.pcap", netns=client.name, bpf_filter="this is not a filter")
    with pytest.raises(CaptureError, match="did not start listening"):
        start(tmp_path / "y.pcap", netns="mmtest-no-such-netns-x")
