"""The ADS push server: gRPC streams in, config out (Istio's DiscoveryServer).

Changes from the watches go to the store, become PushRequests, wait in the debouncer, and then fan out
to the connections that need them. Each connection handles its requests and pushes in its own task:
requests are classified (`ads.classify`: new, ACK, NACK, stale, resubscribe) and answered when they ask
for something; a push sends the watched types in Istio's order CDS → EDS → LDS → RDS, or only the
changed ClusterLoadAssignments when only endpoints changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from grpc import aio

from minimesh.pilot import ads, authorization, convert, translate
from minimesh.pilot.cache import Generated, Resource, ResourceCache, encode_response
from minimesh.pilot.connection import Connection, Convergence
from minimesh.pilot.context import PushContext
from minimesh.pilot.metrics import Metrics
from minimesh.pilot.model import Proxy
from minimesh.pilot.protocol import Protocol, detect_protocol
from minimesh.pilot.push import Debouncer, PushRequest
from minimesh.pilot.store import MeshStore
from minimesh.xds import node as xnode
from minimesh.xds import resources as xr

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHOD = "StreamAggregatedResources"


class DiscoveryServer:
    def __init__(self, store: MeshStore | None = None, *, debounce_quiet: float = 0.1, debounce_max: float = 1.0,
                 metrics: Metrics | None = None, hold_until_synced: bool = False) -> None:
        self.store = store or MeshStore()
        # istiod answers no proxy before its watches have listed everything: a restarted push server must
        # not hand reconnecting proxies a half-empty mesh.
        self.hold_until_synced = hold_until_synced
        self.metrics = metrics or Metrics()
        self.cache = ResourceCache()
        self.debouncer = Debouncer(debounce_quiet, debounce_max)
        self.connections: dict[str, Connection] = {}
        self._versions = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self._nonce_prefix = secrets.token_hex(4)
        self.ctx: PushContext = self.store.snapshot(self._next_version())
        self._type_metrics = {t: (self.metrics.pushes.labels(xr.short_name(t)),
                                  self.metrics.config_size.labels(xr.short_name(t))) for t in xr.PUSH_ORDER}
        self.synced = False  # the watches have listed everything once (see /ready)
        self._kick: asyncio.Event | None = None
        self._debounce_task: asyncio.Task[None] | None = None
        self.pushes = 0  # push rounds (after debounce)
        # Called with (connection, seconds) when a proxy has ACKed a whole push (benchmarks, tests).
        self.on_converged: Callable[[Connection, float], None] | None = None

    # ---- change feed (call on the event loop) ------------------------------------------------

    def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        self.on_change(self.store.apply(kind, event_type, obj))

    def replace(self, kind: str, objs: list[Mapping[str, Any]]) -> None:
        self.on_change(self.store.replace(kind, objs))

    def on_change(self, request: PushRequest | None) -> None:
        if request is None:
            return
        for reason, n in request.reasons.items():
            self.metrics.triggers.labels(reason).inc(n)
        self.debouncer.add(request, time.monotonic())
        if self._kick is not None:
            self._kick.set()

    def start(self) -> None:
        """Start the debounce loop on the running event loop."""
        self._kick = asyncio.Event()
        self._debounce_task = asyncio.get_running_loop().create_task(self._debounce_loop(), name="pilot-debounce")

    async def stop(self) -> None:
        if self._debounce_task is not None:
            self._debounce_task.cancel()
            try:
                await self._debounce_task
            except asyncio.CancelledError:
                pass
        for conn in list(self.connections.values()):
            conn.close()

    async def _debounce_loop(self) -> None:
        assert self._kick is not None
        while True:
            due = self.debouncer.deadline()
            now = time.monotonic()
            if due is None or due > now:
                self._kick.clear()
                try:
                    await asyncio.wait_for(self._kick.wait(), None if due is None else due - now)
                except TimeoutError:
                    pass
                continue
            taken = self.debouncer.take(now)
            if taken is not None:
                request, held = taken
                self.metrics.debounce.observe(held)
                self.push(request)

    # ---- fan-out -----------------------------------------------------------------------------

    def push(self, request: PushRequest) -> int:
        """Take a new snapshot and queue the push on every connection that needs it; returns how many."""
        old = self.ctx
        self.ctx = self.store.snapshot(self._next_version())
        self.pushes += 1
        if request.full:
            self.cache.next_generation()
            self.metrics.full_pushes.inc()
        else:
            request = dataclasses.replace(request, clusters=frozenset(self._changed_clusters(request, old)))
        queued = 0
        for conn in self.connections.values():
            if self._needs_push(conn, request, old):
                conn.enqueue_push(request)
                queued += 1
        return queued

    def _needs_push(self, conn: Connection, request: PushRequest, old: PushContext) -> bool:
        proxy = conn.proxy
        if not request.full:
            watched = conn.watched.get(xr.ENDPOINT_TYPE)
            return watched is not None and not request.clusters.isdisjoint(watched.names)
        if request.everything or proxy.namespace in request.namespaces:
            return True
        before = (conn.last_ctx or old).scope(proxy).keys
        after = self.ctx.scope(proxy).keys
        return any(k in before or k in after or k.split("/", 1)[0] == proxy.namespace for k in request.services)

    def _changed_clusters(self, request: PushRequest, old: PushContext) -> set[str]:
        names: set[str] = set()
        for key in request.services:
            for ctx in (old, self.ctx):
                ns, _, name = key.partition("/")
                svc = ctx.service(xr.service_hostname(name, ns, self.store.domain))
                if svc is not None:
                    names.update(xr.outbound_cluster_name(p.port, svc.hostname) for p in svc.ports
                                 if detect_protocol(p) is not Protocol.UDP)
        return names

    # ---- gRPC --------------------------------------------------------------------------------

    def add_to(self, server: aio.Server) -> None:
        handler = grpc.stream_stream_rpc_method_handler(
            self.stream,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=None,  # responses are already bytes (see cache.encode_response)
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, {ADS_METHOD: handler}),))

    async def stream(self, requests: Any, context: aio.ServicerContext) -> None:
        while self.hold_until_synced and not self.synced:
            await asyncio.sleep(0.05)
        reader = requests.__aiter__()
        try:
            first = await reader.__anext__()
        except StopAsyncIteration:
            return
        try:
            proxy = convert.proxy(first.node)
        except (xnode.NodeIdError, convert.ConvertError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"first DiscoveryRequest: node: {e}")
            return
        conn = Connection(f"{proxy.id}-{next(self._conn_ids)}", proxy, context.peer())
        self.connections[conn.id] = conn
        self.metrics.connected.set(len(self.connections))
        log.info("pilot: ADS connect %s from %s", conn.id, conn.peer)
        if self._on_request(conn, first):
            conn.respond(first.type_url)
        receiver = asyncio.get_running_loop().create_task(self._receive(reader, conn))
        try:
            await self._serve(conn, context)
        finally:
            receiver.cancel()
            self.connections.pop(conn.id, None)
            self.metrics.connected.set(len(self.connections))
            log.info("pilot: ADS disconnect %s", conn.id)

    async def _receive(self, reader: Any, conn: Connection) -> None:
        """Requests are bookkeeping (handled here, at once); only those that ask for config go to the
        connection's writer task."""
        try:
            async for request in reader:
                if self._on_request(conn, request):
                    conn.respond(request.type_url)
        except (asyncio.CancelledError, aio.AioRpcError, grpc.RpcError):
            pass
        finally:
            conn.close()

    async def _serve(self, conn: Connection, context: aio.ServicerContext) -> None:
        """The connection's writer: answers subscriptions, then sends the pending push, until closed."""
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            while conn.responses:
                await self._send(conn, context, conn.responses.popleft())
            if conn.closed:
                return
            if conn.pending_push is not None:
                request, conn.pending_push = conn.pending_push, None
                await self._push_connection(conn, context, request)

    def _on_request(self, conn: Connection, request: discovery_pb2.DiscoveryRequest) -> bool:
        """Classify and record one request; True when it must be answered with config."""
        type_url = request.type_url
        if type_url not in xr.MESSAGE_CLASSES:
            log.warning("pilot: %s asked for unsupported type %r; ignored", conn.id, type_url)
            return False
        watched = conn.watched.get(type_url)
        decision = ads.classify(request, watched)
        if decision is ads.Decision.STALE:
            self.metrics.expired_nonce.labels(xr.short_name(type_url)).inc()
            return False
        if decision is ads.Decision.NEW:
            watched = conn.watched[type_url] = ads.WatchedResource(type_url, tuple(request.resource_names))
            conn.subscribed_with[type_url] = (request.version_info, request.response_nonce)
        else:
            assert watched is not None
            ads.record(watched, request, decision)
        if decision is ads.Decision.NACK:
            self.metrics.rejects.labels(xr.short_name(type_url)).inc()
            log.warning("pilot: %s rejected %s version %s: %s", conn.id, xr.short_name(type_url),
                        request.version_info, watched.last_error)
        if decision is not ads.Decision.NEW:
            self._settled(conn, request.response_nonce)
        return decision.respond

    async def _push_connection(self, conn: Connection, context: aio.ServicerContext, request: PushRequest) -> None:
        # A push that supersedes one still waiting for ACKs keeps the older change time: convergence is
        # "change seen -> the proxy ACKed config that includes it".
        start = min(request.start, conn.convergence.start) if conn.convergence else request.start
        tracking = conn.convergence = Convergence(start)
        conn.pushes += 1
        if request.full:
            for type_url in xr.PUSH_ORDER:
                if type_url in conn.watched:
                    await self._send(conn, context, type_url, track=True)
        elif xr.ENDPOINT_TYPE in conn.watched:
            names = [n for n in conn.watched[xr.ENDPOINT_TYPE].names if n in request.clusters]
            if names:
                await self._send(conn, context, xr.ENDPOINT_TYPE, only=names, track=True)
        tracking.writing = False
        if conn.convergence is tracking and not tracking.nonces:
            self._converged(conn, tracking)

    def _settled(self, conn: Connection, nonce: str) -> None:
        """An ACK or NACK of `nonce`: maybe the last answer the current push was waiting for."""
        tracking = conn.convergence
        if tracking is not None and nonce in tracking.nonces:
            tracking.nonces.discard(nonce)
            if not tracking.nonces and not tracking.writing:
                self._converged(conn, tracking)

    def _converged(self, conn: Connection, tracking: Convergence) -> None:
        conn.convergence = None
        if not tracking.sent:
            return  # nothing was pushed to this proxy
        seconds = time.monotonic() - tracking.start
        self.metrics.convergence.observe(seconds)
        if self.on_converged is not None:
            self.on_converged(conn, seconds)

    async def _send(self, conn: Connection, context: aio.ServicerContext, type_url: str, *,
                    only: list[str] | None = None, track: bool = False) -> None:
        """Generate `type_url` for this proxy from the current snapshot and write the response."""
        ctx = self.ctx
        watched = conn.watched[type_url]
        try:
            generated = self.generate(ctx, conn.proxy, type_url, watched.names if only is None else tuple(only))
        except Exception as e:  # a translation bug (or an unfinished exercise): say so, end this stream
            log.exception("pilot: cannot generate %s for %s", xr.short_name(type_url), conn.id)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"cannot generate {xr.short_name(type_url)} for {conn.proxy.id}: {type(e).__name__}: {e}")
            return
        nonce = f"{self._nonce_prefix}-{next(self._nonces)}"
        body = encode_response(ctx.version, type_url, nonce, generated.body)
        watched.nonce_sent, watched.version_sent = nonce, ctx.version
        if track and conn.convergence is not None:
            conn.convergence.nonces.add(nonce)
            conn.convergence.sent += 1
        if only is None:
            conn.sent[type_url] = (generated.resources, {})
        else:  # an incremental EDS response updates some of what the proxy holds
            conn.sent.setdefault(type_url, ((), {}))[1].update((r.name, r) for r in generated.resources)
        conn.last_ctx = ctx
        pushes, sizes = self._type_metrics[type_url]
        await context.write(body)
        pushes.inc()
        sizes.observe(len(body))

    def generate(self, ctx: PushContext, proxy: Proxy, type_url: str, names: tuple[str, ...]) -> Generated:
        """The resources of one type for one proxy, shared between proxies with the same view."""
        scope = ctx.scope(proxy)
        if type_url == xr.ENDPOINT_TYPE:
            key: tuple[Any, ...] = (type_url, names)
        elif type_url == xr.ROUTE_TYPE:
            key = (type_url, scope.key, names)
        elif type_url == xr.LISTENER_TYPE:  # inbound chains also follow the workload's PeerAuthentication
            key = (type_url, scope.key, translate.inbound_ports(ctx, proxy), translate.inbound_port_modes(ctx, proxy),
                   authorization.workload_policies(ctx, proxy))  # and its AuthorizationPolicies
        else:
            key = (type_url, scope.key, translate.inbound_ports(ctx, proxy))
        found = ctx._memo.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        make = self.cache.maker(type_url)
        if type_url == xr.CLUSTER_TYPE:
            out = translate.build_clusters(ctx, proxy, make)
        elif type_url == xr.ENDPOINT_TYPE:
            out = translate.build_load_assignments(ctx, names, make)
        elif type_url == xr.LISTENER_TYPE:
            out = translate.build_listeners(ctx, proxy, make)
        else:
            out = translate.build_routes(ctx, proxy, names, make)
        generated = ctx._memo[key] = Generated.of(out)
        return generated

    def proxy_config(self, proxy: Proxy, ctx: PushContext | None = None) -> dict[str, list[Resource]]:
        """Everything `proxy` would hold after a full sync (all four types), as the server encodes it."""
        ctx = ctx or self.ctx
        eds_names, rds_names = translate.subscriptions(ctx, proxy)
        return {
            xr.CLUSTER_TYPE: list(self.generate(ctx, proxy, xr.CLUSTER_TYPE, ()).resources),
            xr.ENDPOINT_TYPE: list(self.generate(ctx, proxy, xr.ENDPOINT_TYPE, tuple(eds_names)).resources),
            xr.LISTENER_TYPE: list(self.generate(ctx, proxy, xr.LISTENER_TYPE, ()).resources),
            xr.ROUTE_TYPE: list(self.generate(ctx, proxy, xr.ROUTE_TYPE, tuple(rds_names)).resources),
        }

    # ---- helpers -----------------------------------------------------------------------------

    def _next_version(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f"/{next(self._versions)}"


async def serve_grpc(discovery: DiscoveryServer, host: str, port: int,
                     credentials: grpc.ServerCredentials | None = None) -> tuple[aio.Server, int]:
    """Start a grpc.aio server for ADS on host:port (port 0: any free port); returns it and the port."""
    server = aio.server(options=[
        ("grpc.max_concurrent_streams", 1 << 20),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
        # Proxies keep their stream open forever; let them ping to keep NAT and conntrack entries alive.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ])
    discovery.add_to(server)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server, bound
