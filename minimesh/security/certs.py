"""The agent's certificate management: get a workload certificate from the mesh CA, renew it at half
life, and serve it to the proxy over SDS (Istio's pilot-agent SecretManager + SDS server).

    wid = WorkloadIdentity.from_env(proxy_dir="/etc/minimesh/proxy")
    await wid.start()                  # SDS socket up; certificates fetched in the background
    bootstrap["static_resources"]["clusters"].append(sds_cluster(wid.socket_path))
    ...
    await wid.stop()

Settings (env of the proxy container; defaults fit the injected sidecar):
  MESH_CA_ADDRESS     minimeshd.mesh-system.svc:15012
  MESH_CERT_TTL       requested lifetime, e.g. 60s, 10m, 24h (default: the CA's, 24 h); the pod annotation
                      security.minimesh.io/cert-ttl wins (handy to watch renewals: 20s renews every ~10 s)
  MESH_TOKEN_PATH     /var/run/secrets/tokens/minimesh-token (projected, audience minimesh-ca)
  MESH_ROOT_CERT      /var/run/secrets/minimesh/root-cert.pem (ConfigMap minimesh-ca-root-cert)
  MESH_TRUST_DOMAIN   cluster.local
  POD_NAMESPACE, SERVICE_ACCOUNT (the downward API): who we are
Without a CA (stage 5, or lab 06 not done) the agent keeps asking with back-off and the proxy has no
certificate: auto mTLS then stays plaintext, as before stage 6.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minimesh.security import sds, workload
from minimesh.security.ca_client import DEFAULT_ADDRESS, CaCallError, create_certificate
from minimesh.security.identity import TRUST_DOMAIN, Identity, IdentityError

log = logging.getLogger(__name__)

TOKEN_PATH = "/var/run/secrets/tokens/minimesh-token"
ROOT_CERT_PATH = "/var/run/secrets/minimesh/root-cert.pem"
SDS_CLUSTER = "sds-grpc"
CERT_TTL_ANNOTATION = "security.minimesh.io/cert-ttl"
MIN_RETRY, MAX_RETRY = 1.0, 10.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


class SettingsError(ValueError):
    """A setting of the agent's certificate management is wrong; the message names the variable."""


def parse_ttl(value: str, name: str = "MESH_CERT_TTL") -> int:
    """"60s", "10m", "24h", "90" (seconds) → whole seconds."""
    m = _DURATION.match(value.strip())
    if not m:
        raise SettingsError(f"{name}={value!r}: want a duration like 60s, 10m or 24h")
    n = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if n < 1:
        raise SettingsError(f"{name}={value!r}: want at least 1s")
    return int(n)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Settings:
    identity: Identity
    ca_address: str = DEFAULT_ADDRESS
    ttl_seconds: int = 0  # 0: the CA's default
    token_path: str = TOKEN_PATH
    root_cert_path: str = ROOT_CERT_PATH
    ca_server_name: str | None = None  # TLS name to expect from the CA (default: the host of ca_address)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        annotations = annotations or {}
        missing = [k for k in ("POD_NAMESPACE", "SERVICE_ACCOUNT") if not env.get(k)]
        if missing:
            raise SettingsError(f"{', '.join(missing)} not set: the agent names its workload identity from them"
                                " (the injected sidecar sets them from the downward API)")
        try:
            identity = Identity(env["POD_NAMESPACE"], env["SERVICE_ACCOUNT"], env.get("MESH_TRUST_DOMAIN", TRUST_DOMAIN))
        except IdentityError as e:
            raise SettingsError(str(e)) from None
        ttl = parse_ttl(env["MESH_CERT_TTL"]) if env.get("MESH_CERT_TTL") else 0
        if annotations.get(CERT_TTL_ANNOTATION):
            ttl = parse_ttl(annotations[CERT_TTL_ANNOTATION], f"annotation {CERT_TTL_ANNOTATION}")
        return cls(identity, env.get("MESH_CA_ADDRESS", DEFAULT_ADDRESS), ttl, env.get("MESH_TOKEN_PATH", TOKEN_PATH),
                   env.get("MESH_ROOT_CERT", ROOT_CERT_PATH), env.get("MESH_CA_SERVER_NAME") or None)


class CertificateManager:
    """Fetch → use → renew at half life, forever; on failure retry with back-off (1 s .. 10 s)."""

    def __init__(self, settings: Settings, on_change: Callable[[workload.WorkloadCertificate], None],
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings
        self.on_change = on_change
        self.clock = clock
        self.current: workload.WorkloadCertificate | None = None
        self.last_error: str | None = None
        self.issued = 0
        self.failures = 0
        self.last_fetch_seconds: float | None = None

    async def fetch(self) -> workload.WorkloadCertificate:
        s = self.settings
        try:
            root = Path(s.root_cert_path).read_bytes()
        except FileNotFoundError:
            raise OSError(f"the mesh root certificate {s.root_cert_path} is not there (yet): is the mesh CA installed"
                          " (minimesh install) and publishing ConfigMap minimesh-ca-root-cert?") from None
        try:
            token = Path(s.token_path).read_text().strip()
        except FileNotFoundError:
            raise OSError(f"no service-account token at {s.token_path}: the pod needs the projected token volume"
                          " (audience minimesh-ca)") from None
        loop = asyncio.get_running_loop()
        start = loop.time()
        key_pem, csr_pem = await asyncio.to_thread(workload.new_key_and_csr, s.identity)
        chain = await create_certificate(s.ca_address, root, token, csr_pem, s.ttl_seconds,
                                         server_name=s.ca_server_name)
        cert = workload.accept_chain(key_pem, chain, s.identity, self.clock())
        self.last_fetch_seconds = loop.time() - start
        return cert

    async def run(self) -> None:
        delay = MIN_RETRY
        while True:
            try:
                cert = await self.fetch()
            except (CaCallError, workload.CertificateError, OSError) as e:
                self.failures += 1
                self.last_error = str(e)
                log.warning("certs: no certificate from the CA (retry in %.0fs): %s", delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY)
                continue
            delay = MIN_RETRY
            self.current, self.last_error = cert, None
            self.issued += 1
            self.on_change(cert)
            when = cert.rotate_at(workload.jitter())
            wait = max(1.0, (when - self.clock()).total_seconds())
            log.info("certs: %s serial %x valid until %s; renewing in %.0fs", cert.identity, cert.serial,
                     cert.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), wait)
            await asyncio.sleep(wait)


def sds_cluster(socket_path: str | Path) -> dict[str, Any]:
    """The bootstrap's static cluster for SDS (Istio's `sds-grpc`): a unix socket (Envoy's `pipe` address)."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": SDS_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"pipe": {"path": str(socket_path)}}}}]}]},
    }


class WorkloadIdentity:
    """The certificate manager and the SDS server, wired together (what the agent starts)."""

    def __init__(self, settings: Settings, socket_path: str | Path) -> None:
        self.settings = settings
        self.socket_path = Path(socket_path)
        self.secrets = sds.SecretServer()
        self.manager = CertificateManager(settings, self.secrets.update)
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, proxy_dir: str | Path, env: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None) -> WorkloadIdentity:
        return cls(Settings.from_env(env, annotations), Path(proxy_dir) / sds.SOCKET_NAME)

    def contribute(self, bootstrap: dict[str, Any]) -> None:
        """The agent's extension hook: the proxy reaches SDS through the static cluster `sds-grpc`."""
        bootstrap.setdefault("static_resources", {}).setdefault("clusters", []).append(sds_cluster(self.socket_path))

    async def start(self) -> None:
        self._server = await sds.serve(self.secrets, self.socket_path)
        self._task = asyncio.get_running_loop().create_task(self.manager.run(), name="workload-certificates")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            await self._server.stop(grace=0.5)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def status(self) -> dict[str, Any]:
        """For the agent's status endpoints: the certificate in use and the last problem."""
        c = self.manager.current
        return {"identity": self.settings.identity.uri, "certificate": None if c is None else {
            "serial": f"{c.serial:x}", "not_before": c.not_before.isoformat(), "not_after": c.not_after.isoformat(),
            "rotate_at": c.rotate_at().isoformat()}, "issued": self.manager.issued, "failures": self.manager.failures,
            "last_error": self.manager.last_error, "sds_version": self.secrets.version}
