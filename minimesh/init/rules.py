"""The traffic-capture rules of the init container, shaped like Istio's istio-iptables (stage 2). Pure.

`build_rules(cfg)` returns iptables-restore input for the nat table. Chain names are Istio's with our
prefix (ISTIO_INBOUND -> MESH_INBOUND, ISTIO_IN_REDIRECT -> MESH_IN_REDIRECT, ISTIO_OUTPUT -> MESH_OUTPUT,
ISTIO_REDIRECT -> MESH_REDIRECT). Rule order and semantics follow istio/istio
`tools/istio-iptables/pkg/capture/run.go` (`IptablesConfigurator.Run`, REDIRECT mode) and its testdata
goldens (`empty.golden`, `inbound-ports-include.golden`, `inbound-wildcard-exclude.golden`,
`ip-range.golden`, `outbound-ports-exclude.golden`):

1. `MESH_INBOUND`: the tunnel port 15008 returns first; `MESH_REDIRECT` redirects to the outbound
   listener (15001), `MESH_IN_REDIRECT` to the inbound listener (15006).
2. `handleInboundPortsInclude`: `PREROUTING -p tcp -j MESH_INBOUND`; with "*" every excluded port
   returns, then everything else goes to `MESH_IN_REDIRECT`; with a list only those ports are redirected;
   with an empty list inbound traffic is not captured at all (no PREROUTING jump).
3. `OUTPUT -p tcp -j MESH_OUTPUT`; excluded outbound ports return first ("must be applied before
   connections back to self are redirected").
4. `-o lo -s 127.0.0.6/32 -j RETURN`: the inbound passthrough source, so the proxy's own
   proxy -> app connections are not captured again.
5. For the proxy uid, then the proxy gid: proxy -> own pod IP over lo (not 127.0.0.1, not the tunnel
   port) goes to `MESH_IN_REDIRECT` (app -> proxy -> proxy -> app through a Service VIP); other
   processes' traffic over lo returns (app -> app by pod IP), unless an included CIDR is a loopback range;
   everything else from the proxy returns (no loops).
6. `-d 127.0.0.1/32 -j RETURN` (localhost app-to-app), excluded CIDRs return, included outbound ports go
   to `MESH_REDIRECT`, then included CIDRs (or "*": everything left) go to `MESH_REDIRECT`.

Not implemented (Istio has them): TPROXY inbound interception, IPv6 (ip6tables), DNS capture,
interface exclusions, owner-group filters. Everything is IPv4 only.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

MESH_INBOUND = "MESH_INBOUND"
MESH_IN_REDIRECT = "MESH_IN_REDIRECT"
MESH_OUTPUT = "MESH_OUTPUT"
MESH_REDIRECT = "MESH_REDIRECT"
# Declared in this order, as istio-iptables creates them.
MESH_CHAINS = (MESH_INBOUND, MESH_REDIRECT, MESH_IN_REDIRECT, MESH_OUTPUT)
BUILTIN_NAT_CHAINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")

TUNNEL_PORT = 15008  # HBONE tunnel: istio-iptables always lets it through
# Ports of the proxy itself that inbound capture must never take: admin, agent status, health, metrics.
ALWAYS_EXCLUDED_INBOUND = (15000, 15020, 15021, 15090)
LOCALHOST = "127.0.0.1/32"
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6/32"  # the proxy binds this to reach the local app


class CaptureConfigError(ValueError):
    """A capture setting that cannot work; the message names the setting and the value."""


def _port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise CaptureConfigError(f"{what}: {value!r} is not a port number (1-65535)")
    return value


def _ports(values: Iterable[object], what: str) -> tuple[int, ...]:
    out: list[int] = []
    for v in values:
        p = _port(v, what)
        if p not in out:
            out.append(p)
    return tuple(out)


def _cidr(value: object, what: str) -> str:
    try:
        net = ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError as e:
        raise CaptureConfigError(f"{what}: {value!r} is not an IPv4 address or CIDR ({e})") from None
    if net.version != 4:
        raise CaptureConfigError(f"{what}: {value!r} is IPv6; minimesh captures IPv4 only")
    return str(net)


def _cidrs(values: Iterable[object], what: str) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        c = _cidr(v, what)
        if c not in out:
            out.append(c)
    return tuple(out)


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture; field names mirror istio-iptables flags (-p -z -u -g -b -d -i -x -q -o -m).

    List fields accept any iterable and are normalised to tuples; "*" means "all".
    """

    proxy_port: int = 15001  # -p: outbound listener
    inbound_port: int = 15006  # -z: inbound listener
    proxy_uid: int = 1337  # -u
    proxy_gid: int = 1337  # -g
    inbound_ports_include: Literal["*"] | tuple[int, ...] = "*"  # -b; () = no inbound capture
    inbound_ports_exclude: tuple[int, ...] = ()  # -d (ALWAYS_EXCLUDED_INBOUND are added)
    outbound_cidrs_include: Literal["*"] | tuple[str, ...] = "*"  # -i; () = only included ports
    outbound_cidrs_exclude: tuple[str, ...] = ()  # -x
    outbound_ports_include: tuple[int, ...] = ()  # -q
    outbound_ports_exclude: tuple[int, ...] = ()  # -o
    redirect_mode: str = "REDIRECT"  # -m

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("proxy_port", _port(self.proxy_port, "proxy_port"))
        put("inbound_port", _port(self.inbound_port, "inbound_port"))
        if self.proxy_port == self.inbound_port:
            raise CaptureConfigError(
                f"proxy_port and inbound_port are both {self.proxy_port}; they must differ"
            )
        for name in ("proxy_uid", "proxy_gid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise CaptureConfigError(f"{name}: {v!r} is not a user/group id (an integer >= 0)")
        if self.redirect_mode != "REDIRECT":
            hint = " (TPROXY is not implemented in minimesh)" if self.redirect_mode == "TPROXY" else ""
            raise CaptureConfigError(
                f"redirect_mode: {self.redirect_mode!r} is not supported{hint}; use 'REDIRECT'"
            )
        if self.inbound_ports_include != "*":
            if isinstance(self.inbound_ports_include, str):
                raise CaptureConfigError(
                    f"inbound_ports_include: {self.inbound_ports_include!r}: give '*' or a list of ports"
                )
            include = _ports(self.inbound_ports_include, "inbound_ports_include")
            for p in include:
                if p in self.mesh_ports:
                    raise CaptureConfigError(
                        f"inbound_ports_include: port {p} belongs to the proxy itself and cannot be captured"
                    )
            put("inbound_ports_include", include)
        put("inbound_ports_exclude", _ports(self.inbound_ports_exclude, "inbound_ports_exclude"))
        if self.outbound_cidrs_include != "*":
            if isinstance(self.outbound_cidrs_include, str):
                raise CaptureConfigError(
                    f"outbound_cidrs_include: {self.outbound_cidrs_include!r}: give '*' or a list of CIDRs"
                )
            put("outbound_cidrs_include", _cidrs(self.outbound_cidrs_include, "outbound_cidrs_include"))
        if self.outbound_cidrs_exclude == "*" or "*" in self.outbound_cidrs_exclude:
            raise CaptureConfigError(
                "outbound_cidrs_exclude: '*' is not allowed (it would disable capture; exclude CIDRs)"
            )
        put("outbound_cidrs_exclude", _cidrs(self.outbound_cidrs_exclude, "outbound_cidrs_exclude"))
        put("outbound_ports_include", _ports(self.outbound_ports_include, "outbound_ports_include"))
        put("outbound_ports_exclude", _ports(self.outbound_ports_exclude, "outbound_ports_exclude"))

    @property
    def mesh_ports(self) -> tuple[int, ...]:
        """Ports the proxy itself listens on."""
        return (self.proxy_port, self.inbound_port, TUNNEL_PORT, *ALWAYS_EXCLUDED_INBOUND)

    @property
    def inbound_excludes(self) -> tuple[int, ...]:
        """Inbound ports that bypass the proxy when all ports are captured: the proxy's own, then the user's."""
        out = list(ALWAYS_EXCLUDED_INBOUND)
        out += [p for p in self.inbound_ports_exclude if p not in out]
        return tuple(out)

    @property
    def includes_loopback(self) -> bool:
        """An included CIDR is a loopback range: then app traffic over lo is captured too (as Istio)."""
        if self.outbound_cidrs_include == "*":
            return False
        return any(ipaddress.ip_network(c).network_address.is_loopback for c in self.outbound_cidrs_include)


def inbound_rules(cfg: CaptureConfig) -> list[str]:
    """The PREROUTING -> MESH_INBOUND rules (iptables-restore `-A` lines, in order)."""
    # BEGIN EXERCISE lab-02
    # TODO: build the inbound capture rules.
    #   Return [] when cfg.inbound_ports_include is () (no inbound capture). Otherwise jump from
    #   PREROUTING to MESH_INBOUND for tcp; with "*" let every port of cfg.inbound_excludes RETURN and
    #   send the rest to MESH_IN_REDIRECT; with a list send only those ports to MESH_IN_REDIRECT.
    raise NotImplementedError("lab 02: inbound_rules: build the inbound capture rules.")
    # END EXERCISE


def outbound_rules(cfg: CaptureConfig) -> list[str]:
    """The OUTPUT -> MESH_OUTPUT rules (iptables-restore `-A` lines, in order)."""
    # BEGIN EXERCISE lab-02
    # TODO: build the outbound capture rules.
    #   Jump from OUTPUT to MESH_OUTPUT for tcp, then in MESH_OUTPUT, in this order: excluded ports
    #   RETURN; -o lo from 127.0.0.6 RETURN; for the proxy uid and then the gid: proxy over lo to a
    #   non-127.0.0.1 address (not the tunnel port) -> MESH_IN_REDIRECT, others over lo RETURN (unless
    #   cfg.includes_loopback), the proxy's own traffic RETURN; 127.0.0.1 RETURN; excluded CIDRs RETURN;
    #   included ports -> MESH_REDIRECT; included CIDRs (or "*": everything) -> MESH_REDIRECT.
    raise NotImplementedError("lab 02: outbound_rules: build the outbound capture rules.")
    # END EXERCISE


def describe(cfg: CaptureConfig) -> str:
    """One comment line that says what the rules do (iptables-restore skips '#' lines)."""

    def show(v: str | tuple[int | str, ...]) -> str:
        return v if isinstance(v, str) else ",".join(map(str, v)) or "-"

    return (
        f"# minimesh capture: outbound -> {cfg.proxy_port}, inbound -> {cfg.inbound_port}, proxy uid/gid"
        f" {cfg.proxy_uid}/{cfg.proxy_gid}; inbound include {show(cfg.inbound_ports_include)} exclude"
        f" {show(cfg.inbound_excludes)}; outbound CIDRs include {show(cfg.outbound_cidrs_include)} exclude"
        f" {show(cfg.outbound_cidrs_exclude)}; outbound ports include {show(cfg.outbound_ports_include)}"
        f" exclude {show(cfg.outbound_ports_exclude)}"
    )


def build_rules(cfg: CaptureConfig) -> str:
    """iptables-restore input (nat table) that installs the capture; apply with `--noflush`."""
    lines = [
        describe(cfg),
        "*nat",
        *(f":{chain} - [0:0]" for chain in MESH_CHAINS),
        f"-A {MESH_INBOUND} -p tcp --dport {TUNNEL_PORT} -j RETURN",
        f"-A {MESH_REDIRECT} -p tcp -j REDIRECT --to-ports {cfg.proxy_port}",
        f"-A {MESH_IN_REDIRECT} -p tcp -j REDIRECT --to-ports {cfg.inbound_port}",
        *inbound_rules(cfg),
        *outbound_rules(cfg),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


# ---- reading iptables-save, cleanup and verification -------------------------------------------


@dataclass(frozen=True)
class NatState:
    """The nat table as iptables-save shows it: declared chains and `-A` rules (chain, rest-of-line)."""

    chains: tuple[str, ...]
    rules: tuple[tuple[str, str], ...]

    def mesh_chains(self) -> tuple[str, ...]:
        return tuple(c for c in self.chains if c in MESH_CHAINS)

    def jumps_to_mesh(self) -> tuple[tuple[str, str], ...]:
        """Rules in built-in chains whose target is one of our chains."""
        return tuple(
            (chain, rest)
            for chain, rest in self.rules
            if chain in BUILTIN_NAT_CHAINS and _target(rest) in MESH_CHAINS
        )

    def count(self, chain: str) -> int:
        return sum(1 for c, _ in self.rules if c == chain)


def _target(rest: str) -> str | None:
    words = shlex.split(rest)
    for i, w in enumerate(words[:-1]):
        if w in ("-j", "--jump", "-g", "--goto"):
            return words[i + 1]
    return None


def parse_nat(saved: str) -> NatState:
    """Parse the `*nat` section of iptables-save (or of our own restore input)."""
    chains: list[str] = []
    rules: list[tuple[str, str]] = []
    in_nat = False
    for raw in saved.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif not in_nat:
            continue
        elif line == "COMMIT":
            in_nat = False
        elif line.startswith(":"):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            rules.append((chain, rest[0] if rest else ""))
    return NatState(tuple(chains), tuple(rules))


def cleanup_lines(saved: str) -> list[str]:
    """Restore lines (no table header) that remove every trace of the capture from `saved`."""
    state = parse_nat(saved)
    lines = [f"-D {chain} {rest}" for chain, rest in state.jumps_to_mesh()]
    present = state.mesh_chains()
    lines += [f"-F {chain}" for chain in present]
    lines += [f"-X {chain}" for chain in present]
    return lines


def build_cleanup(saved: str) -> str:
    """iptables-restore input that uninstalls the capture found in `saved` ("" if there is none).

    Computed from what is really installed (iptables-save output), because `-D` of a rule that is not
    there fails the whole transaction.
    """
    lines = cleanup_lines(saved)
    if not lines:
        return ""
    return "\n".join(["# minimesh capture: uninstall", "*nat", *lines, "COMMIT"]) + "\n"


def build_apply(cfg: CaptureConfig, saved: str) -> str:
    """Like build_rules, but first removes a capture already installed, all in one transaction."""
    lines = build_rules(cfg).splitlines()
    at = lines.index("*nat") + 1
    return "\n".join([*lines[:at], *cleanup_lines(saved), *lines[at:]]) + "\n"


def verify(rules: str, saved: str) -> list[str]:
    """Differences between the rules we applied and what iptables-save shows (empty: all there)."""
    want, got = parse_nat(rules), parse_nat(saved)
    problems = [f"chain {c} is missing" for c in want.chains if c not in got.chains]
    for chain in MESH_CHAINS:
        if want.count(chain) != got.count(chain):
            problems.append(
                f"chain {chain}: want {want.count(chain)} rules, iptables-save shows {got.count(chain)}"
            )
    for chain in BUILTIN_NAT_CHAINS:
        w = sum(1 for c, _ in want.jumps_to_mesh() if c == chain)
        g = sum(1 for c, _ in got.jumps_to_mesh() if c == chain)
        if w != g:
            problems.append(f"chain {chain}: want {w} jumps into MESH_ chains, iptables-save shows {g}")
    return problems
