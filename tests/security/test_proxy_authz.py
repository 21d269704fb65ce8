"""AuthorizationPolicy enforced by real proxies: the push server's inbound chains (mTLS + RBAC filters) on a
server proxy, a client proxy presenting productpage's certificate from the mesh CA, and plain clients.
Denials are 403 `RBAC: access denied` with the matched policy in the access log; paths are normalised
before they are matched; TCP chains close denied connections before they reach the app."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minimesh.authz import translate
from minimesh.authz.model import parse_policy
from minimesh.pilot import authorization, mtls
from minimesh.pilot.model import Config
from minimesh.pilot.protocol import Protocol
from minimesh.security import ca
from minimesh.security.certs import sds_cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxy"))
from proxy_helpers import (
    LOOPBACK,
    addr,
    bootstrap,
    free_port,
    raw_exchange,
    raw_server,
    running_proxy,
    static_cluster,
    status_of,
    upstreams,
)

from .pki_support import root
from .test_proxy_mtls import DETAILS, PRODUCTPAGE, client_boot, issue, secret_server, wait_for

NS = "default"
PRODUCTPAGE_ID = PRODUCTPAGE.uri.removeprefix("spiffe://")
DETAILS_ONLY_GET = {"rules": [{"from": [{"source": {"principals": [PRODUCTPAGE_ID]}}],
                               "to": [{"operation": {"methods": ["GET"], "paths": ["/details*"]}}]}]}
DENY_DEBUG = {"action": "DENY", "rules": [{"when": [{"key": "request.headers[x-debug]", "values": ["*"]}]}]}


def records(specs: dict[str, dict[str, Any]]) -> tuple[Config, ...]:
    return tuple(Config("AuthorizationPolicy", name, NS, spec, "1") for name, spec in specs.items())


def server_listener(port: int, policies: tuple[Config, ...], protocol: Protocol = Protocol.HTTP) -> dict[str, Any]:
    """The push server's virtualInbound (stage 6 chains + stage 7 filters), bound on loopback for the test."""
    listener = authorization.virtual_inbound(((port, protocol, mtls.Mode.PERMISSIVE),), policies)
    listener["address"] = addr(LOOPBACK, port)
    listener["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector"}]
    return listener


@pytest.fixture(scope="module")
def signing() -> ca.SigningCa:
    return root(dt.datetime.now(dt.UTC))[0]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@contextlib.asynccontextmanager
async def mesh(tmp: Path, signing: ca.SigningCa, policies: tuple[Config, ...]) -> AsyncIterator[Any]:
    port = free_port()
    async with upstreams("details") as (app,), \
            secret_server(tmp / "server.sock", issue(signing, DETAILS)), \
            secret_server(tmp / "client.sock", issue(signing, PRODUCTPAGE)):
        boot = bootstrap([server_listener(port, policies)],
                         [static_cluster(f"inbound|{port}||", [app.port]),
                          static_cluster("InboundPassthroughClusterIpv4", [app.port]), sds_cluster(tmp / "server.sock")])
        async with running_proxy(boot) as server, \
                running_proxy(client_boot(port, tmp / "client.sock", (DETAILS.uri,))) as client:
            await wait_for("certificates over SDS", lambda: "default" in server.secrets.secrets
                           and "ROOTCA" in client.secrets.secrets)
            yield type("Mesh", (), {"port": port, "app": app, "server": server, "out": client.listener_port("out")})


async def request(port: int, method: str, path: str, *headers: str) -> tuple[int, bytes]:
    extra = "".join(f"{h}\r\n" for h in headers)
    raw = await raw_exchange(port, f"{method} {path} HTTP/1.1\r\nHost: details:9080\r\n{extra}Content-Length: 0\r\n"
                                   "Connection: close\r\n\r\n".encode())
    return status_of(raw), raw.partition(b"\r\n\r\n")[2]


def test_only_productpages_gets_on_details_pass(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        async with mesh(tmp_path, signing, records({"details-get": DETAILS_ONLY_GET})) as m:
            status, body = await request(m.out, "GET", "/details/0")
            assert status == 200 and json.loads(body)["path"] == "/details/0"
            status, body = await request(m.out, "POST", "/details/0")
            assert (status, body) == (403, b"RBAC: access denied")
            assert (await request(m.out, "GET", "/health"))[0] == 403
            # from outside the mesh (plaintext, PERMISSIVE): no principal, no match
            assert await request(m.port, "GET", "/details/0") == (403, b"RBAC: access denied")
            denied = [r for r in m.server.access_log.recent() if r.response_code == 403]
            assert {r.details for r in denied} == {"rbac_access_denied_matched_policy[none]"}
            assert {r.peer_uri_san for r in denied} == {PRODUCTPAGE.uri, ""}
            prefix = f"http.inbound_0.0.0.0_{m.port}.rbac"
            assert m.server.stats.get(f"{prefix}.allowed") == 1 and m.server.stats.get(f"{prefix}.denied") == 3
            assert m.app.requests == 1  # denied requests never reach the app

    run(main())


def test_deny_wins_and_names_the_policy(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        async with mesh(tmp_path, signing, records({"details-get": DETAILS_ONLY_GET, "no-debug": DENY_DEBUG})) as m:
            assert (await request(m.out, "GET", "/details/0"))[0] == 200
            assert (await request(m.out, "GET", "/details/0", "X-Debug: 1"))[0] == 403
            last = m.server.access_log.recent()[-1]
            assert last.details == "rbac_access_denied_matched_policy[ns[default]-policy[no-debug]-rule[0]]"

    run(main())


def test_paths_are_normalised_before_they_are_matched_and_forwarded(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        async with mesh(tmp_path, signing, records({"details-get": DETAILS_ONLY_GET})) as m:
            assert (await request(m.out, "GET", "/details/../admin"))[0] == 403
            status, body = await request(m.out, "GET", "/%61dmin/../details/./1?x=/admin")
            assert status == 200 and json.loads(body)["path"] == "/details/1?x=/admin"
            assert (await request(m.out, "GET", "/details%00"))[0] == 400

    run(main())


def test_allow_nothing_closes_tcp_ports_and_the_passthrough_chain(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        hits: list[bytes] = []

        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            hits.append(await r.read(100))
            w.write(b"pong")
            await w.drain()

        async with raw_server(echo) as app_port, \
                secret_server(tmp_path / "s.sock", issue(signing, DETAILS)):
            port = free_port()
            for policies, want in (((), b"pong"), (records({"allow-nothing": {}}), b"")):
                listener = server_listener(port, policies, Protocol.TCP)
                boot = bootstrap([listener], [static_cluster(f"inbound|{port}||", [app_port]),
                                              static_cluster("InboundPassthroughClusterIpv4", [app_port]),
                                              sds_cluster(tmp_path / "s.sock")])
                async with running_proxy(boot) as proxy:
                    assert await raw_exchange(port, b"ping", read_timeout=2) == want
                    if want == b"":
                        assert proxy.stats.get("tcp.rbac.denied") >= 1
                        line = proxy.access_log.recent()[-1]
                        assert line.termination == "rbac_access_denied_matched_policy[none]"
                        assert line.upstream_cluster == f"inbound|{port}||"
            assert hits == [b"ping"]

    run(main())


def test_a_policy_the_server_cannot_parse_fails_closed() -> None:
    bad = authorization.virtual_inbound(((9080, Protocol.HTTP, mtls.Mode.PERMISSIVE),),
                                        records({"typo": {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["post"]}}]}]}}))
    hcm = bad["filter_chains"][0]["filters"][-1]["typed_config"]
    [deny] = [f for f in hcm["http_filters"] if f["name"] == translate.HTTP_RBAC]
    assert deny["typed_config"]["rules"] == {"action": "DENY", "policies": {
        "ns[default]-policy[typo]-rule[invalid]": translate.ALWAYS}}
    assert hcm["normalize_path"] is True
    with pytest.raises(ValueError, match="did you mean 'POST'"):
        parse_policy({"apiVersion": "security.minimesh.io/v1", "kind": "AuthorizationPolicy",
                      "metadata": {"name": "typo", "namespace": NS},
                      "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["post"]}}]}]}})


def test_authz_check_reads_the_sidecars_own_config(tmp_path: Path, signing: ca.SigningCa) -> None:
    """`minimesh authz check`'s view: the RBAC filters in a real proxy's /config_dump, and its decisions."""
    from minimesh.authz import check
    from minimesh.authz.engine import Request

    async def main() -> None:
        specs = {"allow-nothing": {}, "details-get": DETAILS_ONLY_GET, "no-debug": DENY_DEBUG}
        async with mesh(tmp_path, signing, records(specs)) as m:
            dump = m.server.admin.config_dump()
            chains = check.inbound_chains(dump, m.port)
            assert {c.name.removeprefix(f"0.0.0.0_{m.port}") for c in chains} == {"", "-mtls", "-tls-passthrough"}
            assert check.summary(chains) == [("DENY", "default/no-debug", 1), ("ALLOW", "default/allow-nothing", 1),
                                             ("ALLOW", "default/details-get", 1)]

            def decide(method: str, path: str, principal: str | None, *headers: tuple[str, str]) -> check.Verdict:
                return check.sidecar_decision(chains, Request(method, path, port=m.port, headers=headers,
                                                              source_principal=principal, source_ip=LOOPBACK))

            assert decide("GET", "/details/0", PRODUCTPAGE_ID).why == "allowed by ns[default]-policy[details-get]-rule[0]"
            assert decide("GET", "/details/0", None).why == "rbac_access_denied_matched_policy[none]"
            assert decide("GET", "/details/0", PRODUCTPAGE_ID, ("x-debug", "1")).why == \
                "rbac_access_denied_matched_policy[ns[default]-policy[no-debug]-rule[0]]"
            # what the verdicts predict is what the proxy does
            assert (await request(m.out, "GET", "/details/0", "X-Debug: 1"))[0] == 403
            assert (await request(m.port, "GET", "/details/0"))[0] == 403
            strict = [c for c in chains if c.mtls]
            assert "STRICT" in check.sidecar_decision(strict, Request("GET", "/", port=m.port)).why

    run(main())
