"""Sans-I/O pieces: the HTTP/1.1 parser (with a fuzz test), TLS ClientHello inspection, SO_ORIGINAL_DST
decoding, filter chain matching, Prometheus names, retry decisions, access log lines."""

from __future__ import annotations

import random
import socket
import ssl
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimesh.proxy import retry
from minimesh.proxy.accesslog import StreamInfo, format_line
from minimesh.proxy.config import RetryPolicy, parse_resource
from minimesh.proxy.config.snapshot import LISTENER_TYPE
from minimesh.proxy.filter_chain_match import select_filter_chain
from minimesh.proxy.http1 import END, HttpError, RequestHead, RequestParser, ResponseHead, ResponseParser
from minimesh.proxy.original_dst import parse_sockaddr_in
from minimesh.proxy.stats import Stats
from minimesh.proxy.tls_inspector import NEED_MORE, PLAINTEXT, ClientHelloInfo, inspect


def test_request_parser_streams_bodies_and_keeps_going() -> None:
    p = RequestParser()
    ev = p.feed(b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    head = ev[0]
    assert isinstance(head, RequestHead) and head.chunked and head.target == "/a?b=1"
    assert ev[1:] == [b"hel"]
    assert p.feed(b"lo\r\n0\r\n\r\nGET / HTTP/1.1\r\nhost: y\r\n\r\n")[:2] == [b"lo", END]


@pytest.mark.parametrize(("raw", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                       # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 70_000, 431),               # never-ending head
])
def test_request_parser_errors(raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as e:
        RequestParser().feed(raw)
    assert e.value.status == status


def test_response_parser_head_interim_and_eof() -> None:
    p = ResponseParser("HEAD")
    assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")[1:] == [END]
    p = ResponseParser("GET")
    ev = p.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nab")
    assert isinstance(ev[0], ResponseHead) and ev[0].status == 200 and ev[1:] == [b"ab"]
    assert p.feed_eof(ev[0]) == [END]  # close-delimited body
    p = ResponseParser("GET")
    head = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")[0]
    with pytest.raises(HttpError) as e:
        p.feed_eof(head)
    assert e.value.status == 503
    with pytest.raises(HttpError) as e:
        ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert e.value.status == 502


VALID = (b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", b"POST /y HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc",
         b"PUT /z HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=400),
    st.builds(lambda base, pos, junk: base[:pos] + junk + base[pos:], st.sampled_from(VALID),
              st.integers(0, 60), st.binary(min_size=1, max_size=8)),
    st.builds(lambda base, cut: base[:cut], st.sampled_from(VALID), st.integers(0, 80)),
), st.integers(1, 64))
def test_fuzz_request_parser_never_raises_anything_but_http_error(data: bytes, step: int) -> None:
    p = RequestParser(max_head_bytes=1024)
    try:
        for i in range(0, len(data), step):
            for ev in p.feed(data[i:i + step]):
                if isinstance(ev, HttpError):  # an error after complete requests comes as the last event
                    assert 400 <= ev.status < 500
                    return
                assert isinstance(ev, (RequestHead, bytes)) or ev is END
    except HttpError as e:
        assert 400 <= e.status < 500


def _client_hello(sni: str | None, alpn: list[str]) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_tls_inspector_reads_sni_and_alpn() -> None:
    hello = _client_hello("details.default.svc.cluster.local", ["istio-peer-exchange", "http/1.1"])
    assert inspect(hello) == ClientHelloInfo("details.default.svc.cluster.local", ("istio-peer-exchange", "http/1.1"))
    assert inspect(hello[:3]) is NEED_MORE and inspect(hello[:-5]) is NEED_MORE
    assert inspect(b"GET / HTTP/1.1\r\n") is PLAINTEXT
    assert inspect(b"\x16\x01") is PLAINTEXT
    assert inspect(_client_hello(None, [])) == ClientHelloInfo("", ())


@given(st.binary(max_size=300))
def test_tls_inspector_never_crashes(data: bytes) -> None:
    inspect(b"\x16\x03\x01" + data)


def test_sockaddr_in_decoding() -> None:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 9080) + socket.inet_aton("10.96.0.12") + b"\0" * 8
    assert parse_sockaddr_in(raw) == ("10.96.0.12", 9080)
    with pytest.raises(ValueError):
        parse_sockaddr_in(b"\x0a\x00" + b"\0" * 14)


def _chains() -> tuple:
    tcp = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {"stat_prefix": "s", "cluster": "c"}}
    lst = parse_resource(LISTENER_TYPE, {"name": "in", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "filter_chains": [
            {"name": "9080-tls", "filter_chain_match": {"destination_port": 9080, "transport_protocol": "tls"}, "filters": [tcp]},
            {"name": "9080-plain", "filter_chain_match": {"destination_port": 9080}, "filters": [tcp]},
            {"name": "sni", "filter_chain_match": {"server_names": ["*.svc", "exact.svc"]}, "filters": [tcp]},
            {"name": "alpn", "filter_chain_match": {"application_protocols": ["h2"]}, "filters": [tcp]},
            {"name": "any", "filters": [tcp]}],
        "default_filter_chain": {"name": "default", "filters": [tcp]}})
    return lst.filter_chains, lst.default_filter_chain


@pytest.mark.parametrize(("port", "tp", "sni", "alpn", "want"), [
    (9080, "tls", "", (), "9080-tls"),
    (9080, "raw_buffer", "", (), "9080-plain"),
    (9080, "tls", "exact.svc", (), "9080-tls"),   # destination port is checked first
    (80, "tls", "a.svc", (), "sni"),
    (80, "tls", "x.org", ("h2",), "alpn"),
    (80, "raw_buffer", "", (), "any"),
])
def test_filter_chain_match_order(port: int, tp: str, sni: str, alpn: tuple[str, ...], want: str) -> None:
    chains, default = _chains()
    got = select_filter_chain(chains, default, destination_port=port, transport_protocol=tp, server_name=sni,
                              application_protocols=alpn)
    assert got is not None and got.name == want


def test_prometheus_names_and_tags() -> None:
    s = Stats()
    c = s.scope("cluster", "outbound|9080||details.default.svc.cluster.local", "envoy_cluster_name")
    c.counter("upstream_rq_total").inc(3)
    c.counter("upstream_rq_503").inc()
    c.counter("upstream_rq_5xx").inc()
    c.histogram("upstream_rq_time").record(3)
    s.scope("server").gauge("live").set(1)
    text = s.render_prometheus()
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|9080||details.default.svc.cluster.local"} 3' in text
    assert 'envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name=' in text
    assert 'envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name=' in text
    assert "# TYPE envoy_server_live gauge\nenvoy_server_live 1" in text
    assert 'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|9080||details.default.svc.cluster.local",le="5"} 1' in text
    assert "cluster.outbound|9080||details.default.svc.cluster.local.upstream_rq_total: 3" in s.render_text()


@pytest.mark.parametrize(("retry_on", "kind", "status", "want"), [
    ("5xx", "response", 503, True), ("5xx", "response", 404, False), ("5xx", "connect_failure", 0, True),
    ("gateway-error", "response", 500, False), ("gateway-error", "response", 504, True),
    ("connect-failure", "reset", 0, False), ("connect-failure", "connect_failure", 0, True),
    ("reset", "per_try_timeout", 0, True), ("retriable-4xx", "response", 409, True),
    ("retriable-status-codes", "response", 418, True), ("retriable-status-codes", "response", 419, False),
])
def test_retry_conditions(retry_on: str, kind: str, status: int, want: bool) -> None:
    policy = RetryPolicy(frozenset(retry_on.split(",")), retriable_status_codes=frozenset({418}))
    assert retry.retriable(policy, kind, status) is want
    assert retry.retriable(None, kind, status) is False


def test_backoff_is_jittered_and_capped() -> None:
    p = RetryPolicy(frozenset({"5xx"}), base_interval=0.1, max_interval=0.3)
    rng = random.Random(3)
    assert all(0 <= retry.backoff(p, n, rng) < min(0.1 * 2 ** (n - 1), 0.3) + 1e-9 for n in range(1, 8) for _ in range(50))


def test_access_log_line_shape() -> None:
    i = StreamInfo("10.0.0.5:9080", "10.0.0.9:45678")
    i.method, i.path, i.protocol, i.response_code = "GET", "/details/0", "HTTP/1.1", 503
    i.add_flag("URX")
    i.add_flag("UF")
    i.user_agent, i.request_id, i.authority = "curl/8", "rid", "details:9080"
    i.upstream_host, i.upstream_cluster = "10.0.0.7:9080", "outbound|9080||details"
    i.details = "upstream_reset_before_response_started{connection_failure}"
    line = format_line(i)
    assert line.endswith('"GET /details/0 HTTP/1.1" 503 UF,URX upstream_reset_before_response_started{connection_failure} '
                         '- "-" 0 0 0 - "-" "curl/8" "rid" "details:9080" '
                         '"10.0.0.7:9080" outbound|9080||details - 10.0.0.5:9080 10.0.0.9:45678 - - -\n')
    assert line.startswith("[20") and "Z]" in line


def test_header_limit_applies_to_every_request_on_a_connection() -> None:
    p = RequestParser(max_head_bytes=1024)
    ok = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 3000 + b"\r\n\r\n"
    assert p.feed(ok)[-1] is END
    with pytest.raises(HttpError) as e:
        for i in range(0, len(big), 700):
            p.feed(big[i:i + 700])
    assert e.value.status == 431
    events = RequestParser(max_head_bytes=1024).feed(ok + big)
    assert events[1] is END and isinstance(events[2], HttpError) and events[2].status == 431


def test_deadline_nesting_like_asyncio_timeout() -> None:
    import asyncio

    from minimesh.proxy.deadline import Deadline

    async def main() -> list[str]:
        seen = []
        with Deadline() as outer:
            outer.set(10)
            try:
                with Deadline() as inner:
                    inner.set(0.01)
                    await asyncio.sleep(1)
            except TimeoutError:
                seen.append("inner")
        try:
            with Deadline() as outer:
                outer.set(0.02)
                with Deadline() as inner:
                    inner.set(5)
                    await asyncio.sleep(1)
        except TimeoutError:
            seen.append("outer" if outer.expired and not inner.expired else "?")
        with Deadline() as d:
            d.set(0.01)
            d.set(None)  # disarmed
            await asyncio.sleep(0.03)
        seen.append("disarmed")
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return seen

    assert asyncio.run(main()) == ["inner", "outer", "disarmed"]


def test_pooled_connections_close_after_the_idle_timeout() -> None:
    import asyncio

    from minimesh.proxy.config import Cluster
    from minimesh.proxy.stats import Stats
    from minimesh.proxy.upstream import ClusterRuntime

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        from minimesh.proxy.config import parse_resource
        from minimesh.proxy.config.snapshot import CLUSTER_TYPE

        cfg: Cluster = parse_resource(CLUSTER_TYPE, {"name": "c", "common_http_protocol_options": {"idle_timeout": "1s"},
                                                     "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [
                                                         {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                                                      "port_value": port}}}}]}]}})
        rt = ClusterRuntime(cfg, cfg.load_assignment, Stats())
        host = rt.pick(None)
        assert host is not None
        pool = rt.pool(host)
        conn, reused = await pool.acquire()
        pool.release(conn, True)
        again, reused = await pool.acquire()
        assert again is conn and reused
        pool.release(again, True)
        rt.close_idle(conn.idle_since + 0.5)
        assert pool.idle == [conn]
        rt.close_idle(conn.idle_since + 1.5)
        assert pool.idle == [] and rt.s_cx_idle_timeout.value == 1
        await asyncio.sleep(0.05)
        assert rt.cx_active == 0
        server.close()

    asyncio.run(main())
