"""Secrets the proxy got from SDS, by name, and the SSL contexts built from them.

A transport socket that names SDS secrets (Istio: `default` + `ROOTCA`) has no certificate until the
agent sends one, and gets a new one at every renewal. `ContextSource` hands out the `ssl.SSLContext`
for one transport socket config: built once for PEM files/inline PEM, rebuilt when the secrets it uses
change. Connections take the context when they start, so a renewal changes only new connections.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minimesh.proxy.config.tls import DownstreamTlsContext, SdsSecretConfig, UpstreamTlsContext

if TYPE_CHECKING:
    from minimesh.proxy.config import Cluster
    from minimesh.proxy.sds import SdsClient

log = logging.getLogger("minimesh.proxy.secrets")

# Istio's well-known names: what an SDS cluster is asked for from the start
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"


class SecretNotReady(ssl.SSLError):
    """A transport socket needs an SDS secret that has not arrived (yet)."""


@dataclass(frozen=True, slots=True)
class CertificateSecret:
    chain_pem: str
    key_pem: str


@dataclass(frozen=True, slots=True)
class ValidationSecret:
    trusted_ca_pem: str


def decode_secret(secret: Any) -> CertificateSecret | ValidationSecret:
    """An envoy Secret message → what the proxy keeps; ValueError when it cannot be used."""
    which = secret.WhichOneof("type")
    if which == "tls_certificate":
        chain = _pem(secret.tls_certificate.certificate_chain, f"{secret.name}.tls_certificate.certificate_chain")
        key = _pem(secret.tls_certificate.private_key, f"{secret.name}.tls_certificate.private_key")
        if "CERTIFICATE" not in chain or "PRIVATE KEY" not in key:
            raise ValueError(f"secret {secret.name!r}: want a PEM certificate chain and a PEM private key")
        return CertificateSecret(chain, key)
    if which == "validation_context":
        ca = _pem(secret.validation_context.trusted_ca, f"{secret.name}.validation_context.trusted_ca")
        if "CERTIFICATE" not in ca:
            raise ValueError(f"secret {secret.name!r}: trusted_ca is not PEM")
        return ValidationSecret(ca)
    raise ValueError(f"secret {secret.name!r}: want tls_certificate or validation_context, got {which}")


def _pem(source: Any, where: str) -> str:
    which = source.WhichOneof("specifier")
    if which == "inline_bytes":
        return bytes(source.inline_bytes).decode("ascii", "replace")
    if which == "inline_string":
        return str(source.inline_string)
    raise ValueError(f"{where}: want inline_bytes or inline_string, got {which}")


class SecretManager:
    """Secrets by name, a generation bumped by every change, and one SDS client per SDS cluster."""

    def __init__(self, node: dict[str, Any], static_clusters: Iterable[Cluster] = ()) -> None:
        self.node = node
        self.secrets: dict[str, CertificateSecret | ValidationSecret] = {}
        self.versions: dict[str, str] = {}
        self.generation = 0
        self._pipes: dict[str, str] = {}  # SDS cluster name -> unix socket path
        for c in static_clusters:
            eps = c.load_assignment.all_endpoints() if c.load_assignment else []
            if len(eps) == 1 and eps[0][1].address.to_dict().get("pipe"):
                self._pipes[c.name] = eps[0][1].address.address
        self.clients: dict[str, SdsClient] = {}
        self._names: dict[str, set[str]] = {}
        self._stopping: set[asyncio.Task[None]] = set()  # replaced clients winding down

    # ---- subscriptions ---------------------------------------------------------------------------
    def start(self) -> None:
        """Ask every pipe cluster for Istio's two secrets now, before any config names them."""
        for cluster in self._pipes:
            self.subscribe([SdsSecretConfig(WORKLOAD_SECRET, cluster), SdsSecretConfig(ROOT_SECRET, cluster)])

    def check_source(self, ref: SdsSecretConfig, where: str) -> str | None:
        """None if the secret's SDS cluster is usable, else why not (for a ConfigError at `where`)."""
        if ref.cluster not in self._pipes:
            known = ", ".join(sorted(self._pipes)) or "none"
            return (f"{where}: SDS secret {ref.name!r} comes from cluster {ref.cluster!r}, which is not a static"
                    f" cluster with a pipe (unix socket) address in the bootstrap (those: {known})")
        return None

    def subscribe(self, refs: Iterable[SdsSecretConfig]) -> None:
        """Make sure each secret is asked for (a new name restarts that cluster's stream with all names)."""
        from minimesh.proxy.sds import SdsClient
        from minimesh.xds.backoff import Backoff

        for ref in refs:
            names = self._names.setdefault(ref.cluster, set())
            if ref.name in names or ref.cluster not in self._pipes:
                continue
            names.add(ref.name)
            old = self.clients.pop(ref.cluster, None)
            if old is not None:
                task = asyncio.get_running_loop().create_task(old.stop())
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
            client = SdsClient(self._pipes[ref.cluster], self.node, names, self._applier(ref.cluster),
                               Backoff(base=0.2, maximum=5.0))
            client.version = old.version if old else ""
            self.clients[ref.cluster] = client
            client.start()

    def _applier(self, cluster: str) -> Any:
        def apply(version: str, secrets: list[Any]) -> None:
            decoded = {s.name: decode_secret(s) for s in secrets}  # ValueError → NACK, nothing changes
            changed = {n: v for n, v in decoded.items() if self.secrets.get(n) != v}
            self.secrets.update(decoded)
            for n in decoded:
                self.versions[n] = version
            if changed:
                self.generation += 1
                log.info("sds: secrets %s version %s from %s", ", ".join(sorted(changed)), version, cluster)

        return apply

    async def stop(self) -> None:
        for c in list(self.clients.values()):
            await c.stop()
        self.clients.clear()

    # ---- lookups ---------------------------------------------------------------------------------
    def certificate(self, ref: SdsSecretConfig) -> CertificateSecret:
        s = self.secrets.get(ref.name)
        if not isinstance(s, CertificateSecret):
            raise SecretNotReady(f"SDS secret {ref.name!r} (a certificate) has not arrived from {ref.cluster!r}")
        return s

    def trusted_ca(self, ref: SdsSecretConfig) -> str:
        s = self.secrets.get(ref.name)
        if not isinstance(s, ValidationSecret):
            raise SecretNotReady(f"SDS secret {ref.name!r} (a trusted CA) has not arrived from {ref.cluster!r}")
        return s.trusted_ca_pem

    def has_all(self, refs: Iterable[SdsSecretConfig]) -> bool:
        return all(r.name in self.secrets for r in refs)

    def config_dump(self) -> list[dict[str, Any]]:
        """Envoy's SecretsConfigDump-like view (no private keys)."""
        out = []
        for name, s in sorted(self.secrets.items()):
            kind = "tls_certificate" if isinstance(s, CertificateSecret) else "validation_context"
            out.append({"name": name, "version_info": self.versions.get(name, ""), "type": kind})
        return out


class ContextSource:
    """The SSLContext of one transport socket config, rebuilt when its SDS secrets change."""

    __slots__ = ("_ctx", "_generation", "config", "secrets", "server_side")

    def __init__(self, config: UpstreamTlsContext | DownstreamTlsContext, secrets: SecretManager | None) -> None:
        self.config = config
        self.server_side = isinstance(config, DownstreamTlsContext)
        self.secrets = secrets if config.common.sds_names else None
        self._ctx: ssl.SSLContext | None = None
        self._generation = -1
        if self.secrets is None:
            self._ctx = self._build()  # files/inline PEM: problems show at config time

    def _build(self) -> ssl.SSLContext:
        from minimesh.proxy.tls import client_context, server_context

        if self.server_side:
            return server_context(self.config, self.secrets)  # type: ignore[arg-type]
        return client_context(self.config, self.secrets)  # type: ignore[arg-type]

    @property
    def ready(self) -> bool:
        return self.secrets is None or self.secrets.has_all(self.config.common.sds_names)

    def get(self) -> ssl.SSLContext:
        """The current context; SecretNotReady while an SDS secret is missing."""
        if self.secrets is None:
            assert self._ctx is not None
            return self._ctx
        if self._ctx is None or self._generation != self.secrets.generation:
            generation = self.secrets.generation
            self._ctx = self._build()
            self._generation = generation
        return self._ctx
