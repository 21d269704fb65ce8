"""Which request headers a bookinfo service copies onto its outbound calls (pure).

A mesh can only stitch a trace together, or route a user's requests consistently, if every service
forwards the request's trace and identity headers to the services it calls. The sidecar cannot do
this: it does not know which outbound call belongs to which inbound request. Istio's Bookinfo apps
forward the same set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PROPAGATED: tuple[str, ...] = (
    # Envoy/Istio request id: one id across every hop and access-log line of a request
    "x-request-id",
    # Zipkin B3 (multi and single header)
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    # W3C trace context
    "traceparent",
    "tracestate",
    # OpenTracing span context (Lightstep)
    "x-ot-span-context",
    # who is asking: header-based routing (end-user: jason) and user-agent matches
    "user-agent",
    "end-user",
)


def propagated_headers(incoming: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """The subset of `incoming` to forward, with lowercase names; a header absent stays absent."""
    items = incoming.items() if isinstance(incoming, Mapping) else incoming
    wanted = set(PROPAGATED)
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        if key in wanted and key not in out:
            out[key] = value
    return out
