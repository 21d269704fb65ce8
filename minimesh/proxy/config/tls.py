"""Transport sockets: `envoy.transport_sockets.tls` with Up/DownstreamTlsContext (PEM files or inline PEM,
or secrets from SDS).

Only what the mesh needs: a certificate chain + key, a trusted CA, SAN matchers (SPIFFE URIs), ALPN,
SNI and `require_client_certificate`. The certificate and the trusted CA may instead name SDS secrets
(`tls_certificate_sds_secret_configs`, `combined_validation_context.validation_context_sds_secret_config`,
Istio's shape: secrets `default` and `ROOTCA` from the agent's `sds-grpc` cluster). The runtime builds an
`ssl.SSLContext` from it (proxy/tls.py), from the secrets' current versions for SDS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minimesh.proxy.config._reader import Node, drop_empty
from minimesh.proxy.config.common import StringMatcher, parse_string_matcher

TLS = "envoy.transport_sockets.tls"
RAW = "envoy.transport_sockets.raw_buffer"
UPSTREAM_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_VERSIONS = ("TLS_AUTO", "TLSv1_2", "TLSv1_3")


@dataclass(frozen=True, slots=True)
class DataSource:
    """PEM from a file (`filename`) or inline (`inline_string`)."""

    filename: str | None = None
    inline_string: str | None = None

    def read(self) -> str:
        if self.inline_string is not None:
            return self.inline_string
        assert self.filename is not None
        with open(self.filename) as f:
            return f.read()

    def to_dict(self) -> dict[str, Any]:
        if self.filename is not None:
            return {"filename": self.filename}
        return {"inline_string": "[redacted]" if "PRIVATE KEY" in (self.inline_string or "") else self.inline_string}


def parse_data_source(node: Node) -> DataSource:
    which = node.one_of("filename", "inline_string", "inline_bytes", "environment_variable")
    if which not in ("filename", "inline_string"):
        raise node.error(f"{which} is not supported, use filename or inline_string", which)
    return DataSource(**{which: node.nonempty_str(which)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SdsSecretConfig:
    """A secret by name from an SDS server reached over the gRPC cluster `cluster` (Istio: sds-grpc)."""

    name: str
    cluster: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sds_config": {
            "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                  "grpc_services": [{"envoy_grpc": {"cluster_name": self.cluster}}]},
            "resource_api_version": "V3"}}


def parse_sds_secret_config(node: Node) -> SdsSecretConfig:
    name = node.nonempty_str("name")

    def source(n: Node) -> str:
        which = n.one_of("api_config_source", "ads", "path_config_source", "path")
        if which != "api_config_source":
            raise n.error(f"{which} is not supported for SDS; use api_config_source (gRPC to the agent's SDS cluster)",
                          which)
        n.ignore("resource_api_version", "initial_fetch_timeout", "authorities")

        def api(a: Node) -> str:
            a.enum("api_type", ("GRPC",), "GRPC")
            a.ignore("transport_api_version", "set_node_on_first_message_only", "refresh_delay", "request_timeout",
                     "rate_limit_settings")

            def service(g: Node) -> str:
                g.ignore("timeout", "initial_metadata")
                if g.has("google_grpc"):
                    raise g.error("google_grpc is not supported; use envoy_grpc with a cluster_name", "google_grpc")
                found = g.obj("envoy_grpc", lambda e: (e.ignore("authority", "retry_policy"), e.nonempty_str("cluster_name"))[1],
                              required=True)
                assert found is not None
                return found

            clusters = a.items("grpc_services", service, required=True)
            if len(clusters) != 1:
                raise a.error("want exactly one grpc_services entry", "grpc_services")
            return clusters[0]

        found = n.obj("api_config_source", api, required=True)
        assert found is not None
        return found

    cluster = node.obj("sds_config", source, required=True)
    assert cluster is not None
    return SdsSecretConfig(name, cluster)


@dataclass(frozen=True, slots=True)
class SanMatcher:
    san_type: str  # URI | DNS | EMAIL | IP_ADDRESS
    matcher: StringMatcher

    def to_dict(self) -> dict[str, Any]:
        return {"san_type": self.san_type, "matcher": self.matcher.to_dict()}


def _san_dicts(matchers: tuple[SanMatcher, ...]) -> dict[str, Any]:
    """Typed matchers go to match_typed_subject_alt_names, untyped (any SAN) ones to match_subject_alt_names."""
    return drop_empty({"match_typed_subject_alt_names": [m.to_dict() for m in matchers if m.san_type != "ANY"],
                       "match_subject_alt_names": [m.matcher.to_dict() for m in matchers if m.san_type == "ANY"]})


@dataclass(frozen=True, slots=True)
class CommonTlsContext:
    certificate_chain: DataSource | None = None
    private_key: DataSource | None = None
    trusted_ca: DataSource | None = None
    san_matchers: tuple[SanMatcher, ...] = ()
    alpn_protocols: tuple[str, ...] = ()
    min_version: str = "TLS_AUTO"
    max_version: str = "TLS_AUTO"
    certificate_sds: SdsSecretConfig | None = None  # instead of certificate_chain + private_key
    validation_sds: SdsSecretConfig | None = None  # instead of trusted_ca

    @property
    def sds_names(self) -> tuple[SdsSecretConfig, ...]:
        return tuple(s for s in (self.certificate_sds, self.validation_sds) if s is not None)

    @property
    def has_certificate(self) -> bool:
        return self.certificate_sds is not None or (self.certificate_chain is not None and self.private_key is not None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.certificate_chain and self.private_key:
            d["tls_certificates"] = [{"certificate_chain": self.certificate_chain.to_dict(),
                                      "private_key": self.private_key.to_dict()}]
        if self.certificate_sds is not None:
            d["tls_certificate_sds_secret_configs"] = [self.certificate_sds.to_dict()]
        if self.validation_sds is not None:
            d["combined_validation_context"] = {
                "default_validation_context": _san_dicts(self.san_matchers),
                "validation_context_sds_secret_config": self.validation_sds.to_dict()}
        elif self.trusted_ca or self.san_matchers:
            d["validation_context"] = drop_empty({
                "trusted_ca": self.trusted_ca.to_dict() if self.trusted_ca else None, **_san_dicts(self.san_matchers)})
        if self.alpn_protocols:
            d["alpn_protocols"] = list(self.alpn_protocols)
        if (self.min_version, self.max_version) != ("TLS_AUTO", "TLS_AUTO"):
            d["tls_params"] = {"tls_minimum_protocol_version": self.min_version,
                               "tls_maximum_protocol_version": self.max_version}
        return d


def _parse_common(node: Node) -> CommonTlsContext:
    certs = node.list("tls_certificates")
    if len(certs) > 1:
        raise node.error("only one certificate is supported", "tls_certificates")
    chain = key = None
    if certs:
        c = Node(certs[0], f"{node.sub('tls_certificates')}[0]")
        chain = c.obj("certificate_chain", parse_data_source, required=True)
        key = c.obj("private_key", parse_data_source, required=True)
        c.finish()
    sds_certs = node.items("tls_certificate_sds_secret_configs", parse_sds_secret_config)
    if len(sds_certs) > 1:
        raise node.error("only one certificate is supported", "tls_certificate_sds_secret_configs")
    if sds_certs and certs:
        raise node.error("set tls_certificates or tls_certificate_sds_secret_configs, not both",
                         "tls_certificate_sds_secret_configs")

    def validation(n: Node) -> tuple[DataSource | None, tuple[SanMatcher, ...]]:
        ca = n.obj("trusted_ca", parse_data_source)

        def typed(m: Node) -> SanMatcher:
            kind = m.enum("san_type", ("URI", "DNS", "EMAIL", "IP_ADDRESS"), "URI")
            sm = m.obj("matcher", parse_string_matcher, required=True)
            assert sm is not None
            return SanMatcher(kind, sm)

        sans = n.items("match_typed_subject_alt_names", typed)
        legacy = n.items("match_subject_alt_names", parse_string_matcher)
        n.ignore("trust_chain_verification", "crl", "allow_expired_certificate")
        return ca, sans + tuple(SanMatcher("ANY", m) for m in legacy)

    ca, sans = node.obj("validation_context", validation) or (None, ())

    def combined(n: Node) -> tuple[tuple[SanMatcher, ...], SdsSecretConfig]:
        default = n.obj("default_validation_context", validation)
        if default is not None and default[0] is not None:
            raise n.error("the trusted CA comes from validation_context_sds_secret_config; remove trusted_ca",
                          "default_validation_context.trusted_ca")
        sds = n.obj("validation_context_sds_secret_config", parse_sds_secret_config, required=True)
        assert sds is not None
        n.ignore("validation_context_certificate_provider", "validation_context_certificate_provider_instance")
        return (default[1] if default else ()), sds

    validation_sds = None
    if node.has("combined_validation_context"):
        if node.has("validation_context"):
            raise node.error("set validation_context or combined_validation_context, not both",
                             "combined_validation_context")
        found = node.obj("combined_validation_context", combined)
        assert found is not None
        sans, validation_sds = found

    def params(n: Node) -> tuple[str, str]:
        n.ignore("cipher_suites", "ecdh_curves", "signature_algorithms")
        return (n.enum("tls_minimum_protocol_version", TLS_VERSIONS, "TLS_AUTO"),
                n.enum("tls_maximum_protocol_version", TLS_VERSIONS, "TLS_AUTO"))

    lo, hi = node.obj("tls_params", params) or ("TLS_AUTO", "TLS_AUTO")
    if node.has("validation_context_sds_secret_config"):
        raise node.error("put validation_context_sds_secret_config inside combined_validation_context",
                         "validation_context_sds_secret_config")
    return CommonTlsContext(chain, key, ca, sans, node.str_list("alpn_protocols"), lo, hi,
                            sds_certs[0] if sds_certs else None, validation_sds)


@dataclass(frozen=True, slots=True)
class UpstreamTlsContext:
    common: CommonTlsContext
    sni: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": TLS, "typed_config": {"@type": UPSTREAM_TYPE, "common_tls_context": self.common.to_dict(),
                                              **({"sni": self.sni} if self.sni else {})}}


@dataclass(frozen=True, slots=True)
class DownstreamTlsContext:
    common: CommonTlsContext
    require_client_certificate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": TLS, "typed_config": {"@type": DOWNSTREAM_TYPE, "common_tls_context": self.common.to_dict(),
                                              "require_client_certificate": self.require_client_certificate}}


def parse_transport_socket(node: Node, *, upstream: bool) -> UpstreamTlsContext | DownstreamTlsContext | None:
    """`{name, typed_config}`; raw_buffer gives None (plain TCP)."""
    name = node.str("name", "")
    cfg = node.mapping("typed_config")
    if name == RAW or (not name and not cfg):
        return None
    if name != TLS:
        raise node.error(f"unknown transport socket {name!r} (known: {TLS}, {RAW})", "name")
    want = UPSTREAM_TYPE if upstream else DOWNSTREAM_TYPE
    t = Node(cfg, node.sub("typed_config"))
    got = t.str("@type", want)
    if got != want:
        raise t.error(f"want {want} here, got {got}", "@type")
    common = t.obj("common_tls_context", _parse_common) or CommonTlsContext()
    t.ignore("session_ticket_keys", "max_session_keys", "allow_renegotiation", "ocsp_staple_policy",
             "disable_stateless_session_resumption", "full_scan_certs_on_sni_mismatch")
    if upstream:
        sni = t.str("sni", "")
        t.finish()
        return UpstreamTlsContext(common, sni)
    require = t.bool("require_client_certificate")
    t.finish()
    if not common.has_certificate:
        raise t.error("a server-side TLS context needs tls_certificates or tls_certificate_sds_secret_configs",
                      "common_tls_context")
    return DownstreamTlsContext(common, require)
