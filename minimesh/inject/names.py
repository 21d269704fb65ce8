"""Names the injector writes and reads: Istio's, under the `minimesh.io` prefixes.

| Istio                                   | minimesh                                    |
|-----------------------------------------|---------------------------------------------|
| istio-init / istio-proxy                | minimesh-init / minimesh-proxy              |
| sidecar.istio.io/status                 | sidecar.minimesh.io/status                  |
| sidecar.istio.io/inject (label, annot.) | sidecar.minimesh.io/inject                  |
| istio-injection=enabled (namespace)     | minimesh-injection=enabled                  |
| ISTIO_KUBE_APP_PROBERS                  | MESH_KUBE_APP_PROBERS                       |
"""

from __future__ import annotations

INIT_CONTAINER = "minimesh-init"
PROXY_CONTAINER = "minimesh-proxy"

# pod metadata
STATUS_ANNOTATION = "sidecar.minimesh.io/status"
INJECT_KEY = "sidecar.minimesh.io/inject"  # label (preferred, as Istio) or annotation
NATIVE_SIDECAR_ANNOTATION = "sidecar.minimesh.io/nativeSidecar"
REWRITE_PROBES_ANNOTATION = "sidecar.minimesh.io/rewriteAppHTTPProbers"
TLS_MODE_LABEL = "security.minimesh.io/tlsMode"
TLS_MODE = "minimesh"
CANONICAL_NAME_LABEL = "service.minimesh.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.minimesh.io/canonical-revision"
PROMETHEUS_SCRAPE = "prometheus.io/scrape"
PROMETHEUS_PORT = "prometheus.io/port"
PROMETHEUS_PATH = "prometheus.io/path"

# namespace
NAMESPACE_LABEL = "minimesh-injection"
NAMESPACE_ENABLED = "enabled"
# Never injected, whatever their labels say (Istio's IgnoredNamespaces).
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})

# the proxy (ports shared with minimesh.init: the capture always lets 15020/15021/15090 through)
PROXY_UID = 1337
PROXY_GID = 1337
STATUS_PORT = 15020  # agent: app-probe rewrites (/app-health/...), merged /stats/prometheus
HEALTH_PORT = 15021  # agent: /healthz/ready
PROMETHEUS_PORT_NUMBER = 15090  # proxy: http-envoy-prom
DISCOVERY_ADDRESS = "minimeshd.mesh-system.svc:15010"

# env of the proxy container
APP_PROBERS_ENV = "MESH_KUBE_APP_PROBERS"
PROMETHEUS_ANNOTATIONS_ENV = "MESH_PROMETHEUS_ANNOTATIONS"

# volumes
ENVOY_VOLUME = "minimesh-envoy"
DATA_VOLUME = "minimesh-data"
PODINFO_VOLUME = "minimesh-podinfo"
TOKEN_VOLUME = "minimesh-token"
CA_ROOT_VOLUME = "minimesh-ca-root"
SOURCE_VOLUME = "minimesh-src"
CA_ROOT_CONFIGMAP = "minimesh-ca-root-cert"
TOKEN_AUDIENCE = "minimesh-ca"
SOURCE_PATH = "/opt/minimesh"

IMAGE = "minimesh/minimesh:dev"
