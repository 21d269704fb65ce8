"""Probe handlers against real servers on loopback: HTTP, TCP, gRPC health."""

from __future__ import annotations

import asyncio

from minimesh.cluster.local.node.probes import grpc_probe, http_probe, named_port, tcp_probe


async def http_server(status: int) -> tuple[asyncio.base_events.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def test_http_and_tcp_probes() -> None:
    async def go() -> None:
        ok, port, seen = await http_server(204)
        bad, bad_port, _ = await http_server(503)
        try:
            result = await http_probe("127.0.0.1", port, {"path": "health", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, 1)
            assert result == (True, "")
            assert seen[0].startswith(b"GET /health HTTP/1.1\r\n") and b"User-Agent: kube-probe/1.32" in seen[0]
            assert b"X-Probe: 1" in seen[0]
            assert await http_probe("127.0.0.1", bad_port, {}, 1) == (False, "HTTP probe failed with statuscode: 503")
            assert await tcp_probe("127.0.0.1", port, 1) == (True, "")
        finally:
            for s in (ok, bad):
                s.close()
                await s.wait_closed()
        failed, msg = await http_probe("127.0.0.1", port, {}, 1)
        assert not failed and "connect: connection refused" in msg
        assert (await tcp_probe("127.0.0.1", port, 1))[0] is False

    asyncio.run(go())


def test_named_ports() -> None:
    c = {"ports": [{"name": "http", "containerPort": 9080}]}
    assert named_port(c, "http") == 9080 and named_port(c, 80) == 80 and named_port(c, "81") == 81


def test_grpc_health_probe() -> None:
    import grpc

    async def go() -> None:
        state = {"status": 1}  # SERVING

        async def check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return bytes([0x08, state["status"]])

        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=lambda b: b,
                                                         response_serializer=lambda b: b)})
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            assert await grpc_probe("127.0.0.1", port, "", 2) == (True, "")
            state["status"] = 2  # NOT_SERVING
            ok, msg = await grpc_probe("127.0.0.1", port, "svc", 2)
            assert not ok and "unhealthy" in msg
        finally:
            await server.stop(None)

    asyncio.run(go())
