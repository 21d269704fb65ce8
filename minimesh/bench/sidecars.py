"""The sidecar pairs `minimesh bench dataplane` compares, as configuration (pure: text and dicts out).

Every pair sits behind the same capture (the init container of stage 2: outbound to 15001, inbound to 15006,
uid 1337 let through) and does the same job: the client-side proxy takes the app's connection on 15001 and
sends the request to the server pod's IP (keep-alive upstream connections); the server-side proxy takes it on
15006 and sends it to the app on 127.0.0.1, from 127.0.0.6 as Istio's inbound path does. Each proxy runs one
worker (minimesh is one event loop), writes an access log line per request (minimesh and HAProxy to stdout;
nginx to a file, as it reopens its log path and uid 1337 may not reopen the container's stdout), and runs as
uid/gid 1337.

`minimesh-mtls` is the minimesh pair as the finished mesh runs it: STRICT mTLS between the proxies (workload
certificates from a throwaway mesh CA, SPIFFE ids checked both ways, ALPN `minimesh`) and, on the server side,
the RBAC filters the push server compiles from two AuthorizationPolicies (a DENY and an ALLOW for the client's
identity), with path normalisation — so every request is authorised twice, as in stage 7.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OUTBOUND_PORT, INBOUND_PORT = 15001, 15006
INBOUND_SOURCE = "127.0.0.6"
CONFIG_DIR = "/etc/bench"
MTLS = "minimesh-mtls"  # the minimesh pair with STRICT mTLS + AuthorizationPolicy
TRUST_DOMAIN, BENCH_NAMESPACE = "cluster.local", "bench"


@dataclass(frozen=True)
class Sidecar:
    """How to run one kind of proxy: image, command (reading CONFIG_DIR/<config_file>), and how to find its
    processes in a pod (a regular expression over command lines, for `minimesh.bench.procstat`)."""

    name: str
    image: str
    command: tuple[str, ...]
    config_file: str
    process_pattern: str


def sidecar(name: str, haproxy_image: str = "haproxy:2.6", nginx_image: str = "nginx") -> Sidecar:
    if name in ("minimesh", MTLS):
        return Sidecar(name, "minimesh/minimesh:dev",
                       ("python", "-m", "minimesh.proxy", "--bootstrap", f"{CONFIG_DIR}/bootstrap.yaml"),
                       "bootstrap.yaml", r"-m minimesh\.proxy ")
    if name == "nginx":
        return Sidecar(name, nginx_image,
                       ("nginx", "-e", "stderr", "-c", f"{CONFIG_DIR}/nginx.conf", "-g", "daemon off;"),
                       "nginx.conf", r"^nginx: (master|worker) process")
    if name == "haproxy":
        return Sidecar(name, haproxy_image, ("haproxy", "-db", "-f", f"{CONFIG_DIR}/haproxy.cfg"),
                       "haproxy.cfg", r"^haproxy ")
    raise ValueError(f"unknown sidecar {name!r}: choose minimesh, {MTLS}, nginx or haproxy")


# ---- minimesh ----------------------------------------------------------------------------------------


def _addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _hcm(prefix: str, cluster: str) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "stat_prefix": prefix, "http_filters": [{"name": "envoy.filters.http.router"}],
        "route_config": {"name": prefix, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]}]}}}


def _cluster(name: str, host: str, port: int, bind: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(host, port)}}]}]}}
    if bind:
        c["upstream_bind_config"] = {"source_address": {"address": bind, "port_value": 0}}
    return c


def minimesh_client(server_ip: str, port: int, workload: str = "bench-client") -> dict[str, Any]:
    """Bootstrap of the client-side proxy: virtual outbound 15001 → listener for `port` → the server pod."""
    cluster = f"outbound|{port}||bench-server"
    return {
        "node": {"id": f"sidecar~{workload}", "cluster": workload,
                 "metadata": {"WORKLOAD_NAME": workload, "NAMESPACE": "bench"}},
        "admin": {"address": _addr("127.0.0.1", 15000)},
        "static_resources": {
            "listeners": [
                {"name": "virtualOutbound", "address": _addr("0.0.0.0", OUTBOUND_PORT), "use_original_dst": True,
                 "traffic_direction": "OUTBOUND", "filter_chains": []},
                {"name": f"0.0.0.0_{port}", "address": _addr("0.0.0.0", port), "bind_to_port": False,
                 "traffic_direction": "OUTBOUND", "filter_chains": [{"filters": [_hcm(f"outbound_{port}", cluster)]}]},
            ],
            "clusters": [_cluster(cluster, server_ip, port)],
        },
    }


def minimesh_server(app_port: int, workload: str = "bench-server") -> dict[str, Any]:
    """Bootstrap of the server-side proxy: virtual inbound 15006 → the app on 127.0.0.1, from 127.0.0.6."""
    cluster = f"inbound|{app_port}||"
    return {
        "node": {"id": f"sidecar~{workload}", "cluster": workload,
                 "metadata": {"WORKLOAD_NAME": workload, "NAMESPACE": "bench"}},
        "admin": {"address": _addr("127.0.0.1", 15000)},
        "static_resources": {
            "listeners": [
                {"name": "virtualOutbound", "address": _addr("0.0.0.0", OUTBOUND_PORT), "use_original_dst": True,
                 "traffic_direction": "OUTBOUND", "filter_chains": []},
                {"name": "virtualInbound", "address": _addr("0.0.0.0", INBOUND_PORT), "traffic_direction": "INBOUND",
                 "listener_filters": [{"name": "envoy.filters.listener.original_dst"}],
                 "filter_chains": [{"filter_chain_match": {"destination_port": app_port},
                                    "filters": [_hcm(f"inbound_{app_port}", cluster)]}]},
            ],
            "clusters": [_cluster(cluster, "127.0.0.1", app_port, bind=INBOUND_SOURCE)],
        },
    }


# ---- minimesh with STRICT mTLS and AuthorizationPolicy ---------------------------------------------------

MESH_ALPN = "minimesh"
BENCH_POLICIES = """
apiVersion: security.minimesh.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: bench}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[x-debug]
      values: ["*"]
---
apiVersion: security.minimesh.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: bench}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/bench/sa/bench-client"]}
    to:
    - operation: {methods: ["GET", "POST"], paths: ["/*"]}
"""


def spiffe(workload: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{BENCH_NAMESPACE}/sa/{workload}"


def new_mtls_material() -> dict[str, Any]:
    """A throwaway mesh CA and the two workloads' certificates (PEM), made with the mesh's own code
    (`install.pki` for the root, stage 6's `security.ca.issue` for the leaves)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from minimesh.install import pki
    from minimesh.security import ca
    from minimesh.security.identity import Identity

    now = dt.datetime.now(dt.UTC)
    root = pki.new_root_ca(now, "minimesh bench CA")
    signing = ca.load_signing_ca(root.cert_pem, root.key_pem)
    out: dict[str, Any] = {"root": root.cert_pem.decode()}
    for workload in ("bench-client", "bench-server"):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        chain = ca.issue(csr.public_bytes(serialization.Encoding.PEM), Identity(BENCH_NAMESPACE, workload), signing,
                         now, dt.timedelta(hours=24))
        out[workload] = {"chain": "".join(chain), "key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()}
    return out


def _common_tls(m: dict[str, Any], workload: str, peer_sans: tuple[str, ...] = ()) -> dict[str, Any]:
    validation: dict[str, Any] = {"trusted_ca": {"inline_string": m["root"]}}
    if peer_sans:
        validation["match_subject_alt_names"] = [{"exact": s} for s in peer_sans]
    return {"alpn_protocols": [MESH_ALPN], "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            "tls_certificates": [{"certificate_chain": {"inline_string": m[workload]["chain"]},
                                  "private_key": {"inline_string": m[workload]["key"]}}],
            "validation_context": validation}


def _tls_socket(context: str, **fields: Any) -> dict[str, Any]:
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{context}", **fields}}


def minimesh_mtls_client(server_ip: str, port: int, material: dict[str, Any]) -> dict[str, Any]:
    """The client bootstrap with an mTLS upstream: its own certificate, the server's SPIFFE id checked."""
    boot = minimesh_client(server_ip, port)
    cluster = boot["static_resources"]["clusters"][0]
    cluster["transport_socket"] = _tls_socket("UpstreamTlsContext", sni=f"outbound_.{port}_._.bench-server",
                                              common_tls_context=_common_tls(material, "bench-client", (spiffe("bench-server"),)))
    return boot


def minimesh_mtls_server(app_port: int, material: dict[str, Any]) -> dict[str, Any]:
    """The server bootstrap: STRICT (only the mTLS chain on the app's port) and the push server's RBAC filters."""
    import yaml

    from minimesh.authz import translate
    from minimesh.authz.model import parse_policies

    boot = minimesh_server(app_port)
    inbound = boot["static_resources"]["listeners"][1]
    inbound["listener_filters"].append({"name": "envoy.filters.listener.tls_inspector"})
    chain = inbound["filter_chains"][0]
    chain["filter_chain_match"].update({"transport_protocol": "tls", "application_protocols": [MESH_ALPN]})
    chain["transport_socket"] = _tls_socket("DownstreamTlsContext", require_client_certificate=True,
                                            common_tls_context=_common_tls(material, "bench-server"))
    hcm = chain["filters"][0]["typed_config"]
    hcm["normalize_path"] = True
    policies = parse_policies([d for d in yaml.safe_load_all(BENCH_POLICIES) if d])
    hcm["http_filters"] = [*translate.http_filters(policies), *hcm["http_filters"]]
    return boot


# ---- nginx -------------------------------------------------------------------------------------------

_NGINX_HEAD = """\
# minimesh bench: nginx as a sidecar ({role}), one worker, as uid 1337
worker_processes 1;
pid /tmp/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log /tmp/nginx-access.log;  # uid 1337 may not reopen the container's stdout
    client_body_temp_path /tmp/nginx-client-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    keepalive_requests 100000;
    upstream target {{
        server {target};
        keepalive 64;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://target;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
{extra}        }}
    }}
}}
"""


def nginx_client(server_ip: str, port: int) -> str:
    return _NGINX_HEAD.format(role="client side: 15001 -> the server pod", target=f"{server_ip}:{port}",
                              listen=OUTBOUND_PORT, extra="")


def nginx_server(app_port: int) -> str:
    return _NGINX_HEAD.format(role="server side: 15006 -> the app", target=f"127.0.0.1:{app_port}",
                              listen=INBOUND_PORT, extra=f"            proxy_bind {INBOUND_SOURCE};\n")


# ---- HAProxy -----------------------------------------------------------------------------------------

_HAPROXY = """\
# minimesh bench: HAProxy as a sidecar ({role}), one thread, as uid 1337
global
    nbthread 1
    maxconn 4096
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend sidecar
    bind :{listen}
    default_backend target
backend target
    server target {target}{source}
"""


def haproxy_client(server_ip: str, port: int) -> str:
    return _HAPROXY.format(role="client side: 15001 -> the server pod", listen=OUTBOUND_PORT,
                           target=f"{server_ip}:{port}", source="")


def haproxy_server(app_port: int) -> str:
    return _HAPROXY.format(role="server side: 15006 -> the app", listen=INBOUND_PORT,
                           target=f"127.0.0.1:{app_port}", source=f" source {INBOUND_SOURCE}")


def client_config(name: str, server_ip: str, port: int, material: dict[str, Any] | None = None) -> str:
    """The client-side proxy's config file content for sidecar `name` (`material`: minimesh-mtls's certificates)."""
    import yaml

    if name == "minimesh":
        return yaml.safe_dump(minimesh_client(server_ip, port), sort_keys=False)
    if name == MTLS:
        return yaml.safe_dump(minimesh_mtls_client(server_ip, port, material or new_mtls_material()), sort_keys=False)
    if name == "nginx":
        return nginx_client(server_ip, port)
    if name == "haproxy":
        return haproxy_client(server_ip, port)
    raise ValueError(f"unknown sidecar {name!r}")


def server_config(name: str, app_port: int, material: dict[str, Any] | None = None) -> str:
    """The server-side proxy's config file content for sidecar `name` (`material`: minimesh-mtls's certificates)."""
    import yaml

    if name == "minimesh":
        return yaml.safe_dump(minimesh_server(app_port), sort_keys=False)
    if name == MTLS:
        return yaml.safe_dump(minimesh_mtls_server(app_port, material or new_mtls_material()), sort_keys=False)
    if name == "nginx":
        return nginx_server(app_port)
    if name == "haproxy":
        return haproxy_server(app_port)
    raise ValueError(f"unknown sidecar {name!r}")
