"""The push server's HTTP side (istiod's port 15014): readiness, metrics and debug views.

- `/ready`: 200 once the watches have listed everything, 503 before.
- `/metrics`: Prometheus exposition (pilot_xds_pushes, pilot_proxy_convergence_time, ...).
- `/debug/syncz`: per connected proxy and type, the version and nonce sent and ACKed, and the last NACK.
- `/debug/config_dump?proxyID=<id or pod.namespace>`: what the server last sent that proxy.
- `/debug/connections`: the ADS connections.
- `/debug/authorizationz`: the AuthorizationPolicies the server holds, and why any of them cannot be used
  (such a policy fails closed: see `minimesh.authz.translate`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from minimesh.pilot.server import DiscoveryServer
from minimesh.xds import resources as xr

# Envoy's admin ConfigDump section per xDS type: (@type, list key, item key)
_DUMP = {
    xr.CLUSTER_TYPE: ("ClustersConfigDump", "dynamic_active_clusters", "cluster"),
    xr.ENDPOINT_TYPE: ("EndpointsConfigDump", "dynamic_endpoint_configs", "endpoint_config"),
    xr.LISTENER_TYPE: ("ListenersConfigDump", "dynamic_listeners", "active_state"),
    xr.ROUTE_TYPE: ("RoutesConfigDump", "dynamic_route_configs", "route_config"),
}
_SYNCZ_NAMES = {xr.CLUSTER_TYPE: "cluster", xr.ENDPOINT_TYPE: "endpoint", xr.LISTENER_TYPE: "listener",
                xr.ROUTE_TYPE: "route"}


def syncz(discovery: DiscoveryServer) -> list[dict[str, Any]]:
    """istiod's /debug/syncz: `<type>_sent` / `<type>_acked` are nonces, plus versions and NACK errors."""
    out = []
    for conn in sorted(discovery.connections.values(), key=lambda c: c.id):
        row: dict[str, Any] = {"proxy": conn.proxy.id, "connection_id": conn.id, "proxy_type": conn.proxy.type,
                               "namespace": conn.proxy.namespace, "pushes": conn.pushes}
        for type_url, short in _SYNCZ_NAMES.items():
            w = conn.watched.get(type_url)
            if w is None:
                continue
            row[f"{short}_sent"] = w.nonce_sent
            row[f"{short}_acked"] = w.nonce_acked
            row[f"{short}_version_sent"] = w.version_sent
            row[f"{short}_version_acked"] = w.version_acked
            row[f"{short}_synced"] = bool(w.nonce_sent) and w.nonce_sent == w.nonce_acked
            if w.last_error is not None:
                row[f"{short}_error"] = w.last_error
            row[f"{short}_nacks"] = w.nacks
        out.append(row)
    return out


def connections(discovery: DiscoveryServer) -> list[dict[str, Any]]:
    return [
        {"connection_id": c.id, "proxy": c.proxy.id, "peer": c.peer, "connected_at": c.connected_at,
         "namespace": c.proxy.namespace, "labels": c.proxy.label_map(), "service_account": c.proxy.service_account,
         "watched": {xr.short_name(t): list(w.names) for t, w in c.watched.items()}}
        for c in sorted(discovery.connections.values(), key=lambda c: c.id)
    ]


def config_dump(discovery: DiscoveryServer, proxy_id: str) -> dict[str, Any] | None:
    """Envoy-shaped ConfigDump of what the newest connection of `proxy_id` was sent; None if unknown."""
    matches = [c for c in discovery.connections.values()
               if c.proxy.id == proxy_id or f"{c.proxy.pod}.{c.proxy.namespace}" == proxy_id]
    if not matches:
        return None
    conn = max(matches, key=lambda c: c.connected_at)
    configs = []
    for type_url in xr.PUSH_ORDER:
        w = conn.watched.get(type_url)
        if type_url not in conn.sent or w is None:
            continue
        kind, list_key, item_key = _DUMP[type_url]
        items = []
        for r in conn.holds(type_url):
            body = {"@type": type_url, **xr.to_dict(r.message())}
            entry: dict[str, Any] = {"version_info": w.version_sent}
            if type_url == xr.LISTENER_TYPE:
                entry = {"name": r.name, "active_state": {"version_info": w.version_sent, "listener": body}}
            else:
                entry[item_key] = body
            items.append(entry)
        configs.append({"@type": f"type.googleapis.com/envoy.admin.v3.{kind}", "version_info": w.version_sent,
                        list_key: items})
    return {"proxy": conn.proxy.id, "configs": configs}


def authorizationz(discovery: DiscoveryServer) -> dict[str, Any]:
    """istiod's /debug/authorizationz, minimesh-sized: each policy's action and selector, and errors."""
    from minimesh.pilot import authorization

    ctx = discovery.ctx
    errors = authorization.errors(ctx)
    policies = []
    for c in sorted(ctx.configs.get(authorization.AUTHORIZATION_POLICY, ()), key=lambda c: (c.namespace, c.name)):
        key = f"{c.namespace}/{c.name}"
        spec = c.spec or {}
        entry: dict[str, Any] = {"name": key, "action": spec.get("action", "ALLOW"),
                                 "selector": (spec.get("selector") or {}).get("matchLabels") or {},
                                 "rules": len(spec.get("rules") or [])}
        if key in errors:
            entry["error"] = errors[key]
        policies.append(entry)
    return {"policies": policies, "errors": errors}


def make_app(discovery: DiscoveryServer) -> web.Application:
    def dumps(obj: Any) -> web.Response:
        return web.Response(text=json.dumps(obj, indent=2, sort_keys=False) + "\n", content_type="application/json")

    async def ready(_: web.Request) -> web.Response:
        if discovery.synced:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready: the watches have not listed everything yet\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=discovery.metrics.exposition(), content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Exposition": "text/plain; version=0.0.4"})

    async def get_syncz(_: web.Request) -> web.Response:
        return dumps(syncz(discovery))

    async def get_connections(_: web.Request) -> web.Response:
        return dumps(connections(discovery))

    async def get_authorizationz(_: web.Request) -> web.Response:
        return dumps(authorizationz(discovery))

    async def get_config_dump(request: web.Request) -> web.Response:
        proxy_id = request.query.get("proxyID")
        if not proxy_id:
            return web.Response(status=400, text="want ?proxyID=<node id or pod.namespace>\n")
        dump = config_dump(discovery, proxy_id)
        if dump is None:
            known = ", ".join(sorted({c.proxy.id for c in discovery.connections.values()})) or "none"
            return web.Response(status=404, text=f"proxy {proxy_id!r} is not connected; connected: {known}\n")
        return dumps(dump)

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/syncz", get_syncz)
    app.router.add_get("/debug/connections", get_connections)
    app.router.add_get("/debug/config_dump", get_config_dump)
    app.router.add_get("/debug/authorizationz", get_authorizationz)
    return app


async def serve_http(discovery: DiscoveryServer, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the HTTP server (port 0: any free port); returns the runner (to `cleanup()`) and the port."""
    runner = web.AppRunner(make_app(discovery), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    bound = server.sockets[0].getsockname()[1] if server and server.sockets else port  # type: ignore[union-attr]
    return runner, bound
