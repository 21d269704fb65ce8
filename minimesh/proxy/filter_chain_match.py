"""Pick the filter chain for a connection, as Envoy does (pure).

Criteria are applied in Envoy's order: destination_port, server_names, transport_protocol,
application_protocols. At each step the chains that name the value explicitly win over the chains that
leave the criterion unset; chains that name other values drop out. No chain left -> the listener's
default_filter_chain (or None: the connection is closed).
"""

from __future__ import annotations

from collections.abc import Sequence

from minimesh.proxy.config import FilterChain


def _server_name_score(names: tuple[str, ...], sni: str) -> int:
    """-1: no match; otherwise the length of the matched name (longer = more specific; exact beats wildcard)."""
    best = -1
    for n in names:
        if n == sni:
            return 10_000
        if n.startswith("*.") and sni.endswith(n[1:]) and len(sni) > len(n) - 1:
            best = max(best, len(n))
    return best


def select_filter_chain(chains: Sequence[FilterChain], default: FilterChain | None, *, destination_port: int,
                        transport_protocol: str, server_name: str = "",
                        application_protocols: Sequence[str] = ()) -> FilterChain | None:
    cands = list(chains)

    def narrow(specific: list[FilterChain], generic: list[FilterChain]) -> list[FilterChain]:
        return specific if specific else generic

    # destination port
    cands = narrow([c for c in cands if c.filter_chain_match.destination_port == destination_port],
                   [c for c in cands if c.filter_chain_match.destination_port is None])
    # server names: most specific wins
    scored = [(_server_name_score(c.filter_chain_match.server_names, server_name), c)
              for c in cands if c.filter_chain_match.server_names]
    scored = [(s, c) for s, c in scored if s >= 0]
    if scored:
        top = max(s for s, _ in scored)
        cands = [c for s, c in scored if s == top]
    else:
        cands = [c for c in cands if not c.filter_chain_match.server_names]
    # transport protocol
    cands = narrow([c for c in cands if c.filter_chain_match.transport_protocol == transport_protocol],
                   [c for c in cands if not c.filter_chain_match.transport_protocol])
    # application protocols
    cands = narrow([c for c in cands if set(c.filter_chain_match.application_protocols) & set(application_protocols)],
                   [c for c in cands if not c.filter_chain_match.application_protocols])
    return cands[0] if cands else default


def needs_tls_inspection(chains: Sequence[FilterChain]) -> bool:
    """Whether any chain matches on what only the ClientHello tells."""
    return any(c.filter_chain_match.transport_protocol or c.filter_chain_match.server_names
               or c.filter_chain_match.application_protocols for c in chains)
