"""minimesh's Envoy-shaped sidecar proxy (stage 3's data plane).

Run it: `python -m minimesh.proxy --bootstrap bootstrap.yaml`. Embed it: `Proxy(parse_bootstrap(d))`,
`await proxy.start()`, later `await proxy.apply(Snapshot(...))`. Modules, one job each:

  config/         the config model (Envoy's names and YAML shape), parsing with exact error paths
  routing.py      EXERCISE: virtual host / route / weighted cluster selection (pure)
  balancer.py     EXERCISE: round robin, least request (pure)
  http1.py        HTTP/1.1 parsing and serialisation without I/O (httptools)
  channel.py      a socket as an awaitable byte channel with flow control
  listener.py     accept, original destination, TLS inspection, filter chain choice
  hcm.py          the HTTP connection manager; router.py the upstream side; tcp_proxy.py plain TCP
  upstream.py     clusters, hosts, connection pools, circuit breakers, outlier detection
  filters/        the HTTP filter seam (fault now; RBAC in stage 7)
  accesslog.py    stats.py telemetry.py admin.py   observability
  server.py       the Proxy: apply config all-or-nothing, drain, stop
"""

from minimesh.proxy.config import ConfigError, Snapshot, load_bootstrap, parse_bootstrap

__all__ = ["ConfigError", "Snapshot", "load_bootstrap", "parse_bootstrap"]
