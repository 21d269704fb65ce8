"""The proxy's SDS client: secrets from the agent over a unix socket (Envoy's SecretDiscoveryService).

State of the world, like ADS: the first request names the node and the secrets (Istio: `default`, the
workload certificate, and `ROOTCA`, the root to verify peers); each response carries those it has;
each is ACKed (version + nonce) or NACKed (previous version, nonce, error) when a secret is unusable.
Reconnects with back-off and re-subscribes with the versions it holds, so the agent restarting or
starting a moment later than the proxy costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from minimesh.xds.backoff import Backoff
from minimesh.xds.framing import GrpcError, StatusCode
from minimesh.xds.transport import GrpcStream

log = logging.getLogger("minimesh.proxy.sds")

SDS_PATH = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# apply(version, secrets) installs them or raises ValueError (→ NACK with its text)
Apply = Callable[[str, list[secret_pb2.Secret]], None]


class SdsClient:
    def __init__(self, socket_path: str, node: dict[str, Any], names: Iterable[str], apply: Apply,
                 backoff: Backoff | None = None) -> None:
        self.socket_path = socket_path
        self.node = json_format.ParseDict(node, base_pb2.Node(), ignore_unknown_fields=True)
        self.names = tuple(sorted(set(names)))
        self.apply = apply
        self.backoff = backoff or Backoff()
        self.version = ""  # last ACKed
        self.connected = False
        self.last_error: str | None = None
        self.responses = self.nacks = 0
        self._task: asyncio.Task[None] | None = None
        self._stream: GrpcStream | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"sds:{self.socket_path}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _request(self, version: str, nonce: str = "", error: str | None = None, first: bool = False
                 ) -> discovery_pb2.DiscoveryRequest:
        req = discovery_pb2.DiscoveryRequest(version_info=version, type_url=SECRET_TYPE, response_nonce=nonce,
                                             resource_names=list(self.names))
        if first:
            req.node.CopyFrom(self.node)
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=int(StatusCode.INVALID_ARGUMENT), message=error))
        return req

    def handle(self, resp: discovery_pb2.DiscoveryResponse) -> discovery_pb2.DiscoveryRequest:
        """Apply one response; the ACK or NACK to send back."""
        self.responses += 1
        try:
            if resp.type_url != SECRET_TYPE:
                raise ValueError(f"a response for {resp.type_url!r} on the SDS stream")
            secrets = []
            for i, packed in enumerate(resp.resources):
                s = secret_pb2.Secret()
                if packed.type_url != SECRET_TYPE or not packed.Unpack(s):
                    raise ValueError(f"resources[{i}]: not a Secret ({packed.type_url})")
                if s.name not in self.names:
                    continue  # not asked for: ignored, as Envoy does
                secrets.append(s)
            self.apply(resp.version_info, secrets)
        except (ValueError, DecodeError) as e:
            self.nacks += 1
            self.last_error = str(e)
            log.warning("sds: rejecting secrets version %s: %s", resp.version_info, e)
            return self._request(self.version, resp.nonce, str(e))
        self.version, self.last_error = resp.version_info, None
        return self._request(self.version, resp.nonce)

    async def run(self) -> None:
        while True:
            try:
                stream = self._stream = await GrpcStream.open("localhost", 0, SDS_PATH, unix_path=self.socket_path,
                                                               connect_timeout=2.0)
                self.connected = True
                await stream.send(self._request(self.version, first=True).SerializeToString())
                while True:
                    resp = discovery_pb2.DiscoveryResponse.FromString(await stream.recv())
                    self.backoff.reset()
                    await stream.send(self.handle(resp).SerializeToString())
            except (TimeoutError, GrpcError, OSError, DecodeError) as e:
                self.last_error = str(e) or type(e).__name__
                log.debug("sds: stream to %s ended: %s", self.socket_path, self.last_error)
            finally:
                self.connected = False
                if self._stream is not None:
                    await self._stream.close()
                    self._stream = None
            await asyncio.sleep(self.backoff.next_delay())
