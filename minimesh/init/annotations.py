"""Pod annotations -> CaptureConfig, with Istio's annotation names under our prefix. Pure.

| annotation (prefix `traffic.sidecar.minimesh.io/`) | istio-iptables flag | CaptureConfig field |
|---|---|---|
| includeInboundPorts ("*", "" or ports)  | -b | inbound_ports_include |
| excludeInboundPorts                      | -d | inbound_ports_exclude |
| includeOutboundIPRanges ("*", "" or CIDRs) | -i | outbound_cidrs_include |
| excludeOutboundIPRanges                  | -x | outbound_cidrs_exclude |
| includeOutboundPorts                     | -q | outbound_ports_include |
| excludeOutboundPorts                     | -o | outbound_ports_exclude |

plus `sidecar.minimesh.io/interceptionMode` (-m; only REDIRECT). Missing annotations take Istio's
defaults ("*" for both includes). Values are comma-separated; blanks around items are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from minimesh.init.rules import CaptureConfig, CaptureConfigError

PREFIX = "traffic.sidecar.minimesh.io/"
INTERCEPTION_MODE = "sidecar.minimesh.io/interceptionMode"

# annotation name (without prefix) -> (CaptureConfig field, kind of list, "*" allowed)
FIELDS: dict[str, tuple[str, str, bool]] = {
    "includeInboundPorts": ("inbound_ports_include", "ports", True),
    "excludeInboundPorts": ("inbound_ports_exclude", "ports", False),
    "includeOutboundIPRanges": ("outbound_cidrs_include", "cidrs", True),
    "excludeOutboundIPRanges": ("outbound_cidrs_exclude", "cidrs", False),
    "includeOutboundPorts": ("outbound_ports_include", "ports", False),
    "excludeOutboundPorts": ("outbound_ports_exclude", "ports", False),
}


def _items(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse(name: str, value: object) -> object:
    key = PREFIX + name
    _, kind, star_ok = FIELDS[name]
    if not isinstance(value, str):
        raise CaptureConfigError(f"annotation {key}: {value!r} must be a string (annotations are strings)")
    items = _items(value)
    if "*" in items:
        if not star_ok or len(items) > 1:
            where = "alone" if star_ok else "not allowed here"
            raise CaptureConfigError(f"annotation {key}={value!r}: '*' is {where}")
        return "*"
    if kind == "cidrs":
        return tuple(items)  # CaptureConfig validates each CIDR
    ports: list[int] = []
    for item in items:
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise CaptureConfigError(f"annotation {key}={value!r}: {item!r} is not a port number (1-65535)")
        ports.append(int(item))
    return tuple(ports)


def config_from_annotations(
    annotations: Mapping[str, str] | None, container_ports: Iterable[int] = ()
) -> CaptureConfig:
    """The capture config a pod asks for.

    `container_ports` are the pod's declared containerPorts: one that collides with a port of the proxy
    would be silently shadowed by the capture, so it is an error here.
    """
    annotations = annotations or {}
    kwargs: dict[str, object] = {}
    for key, value in annotations.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        if name not in FIELDS:
            raise CaptureConfigError(
                f"annotation {key} is not known; use one of: {', '.join(PREFIX + n for n in FIELDS)}"
            )
        kwargs[FIELDS[name][0]] = _parse(name, value)
    if INTERCEPTION_MODE in annotations:
        kwargs["redirect_mode"] = str(annotations[INTERCEPTION_MODE]).strip()
    try:
        cfg = CaptureConfig(**kwargs)  # type: ignore[arg-type]
    except CaptureConfigError as e:
        field = str(e).split(":", 1)[0]
        names = [PREFIX + n for n, (f, _, _) in FIELDS.items() if f == field]
        if field == "redirect_mode":
            names = [INTERCEPTION_MODE]
        raise CaptureConfigError(f"annotation {names[0]}: {e}" if names else str(e)) from None
    for port in container_ports:
        if port in cfg.mesh_ports:
            raise CaptureConfigError(
                f"containerPort {port} collides with a port of the minimesh proxy"
                f" ({', '.join(map(str, sorted(set(cfg.mesh_ports))))}); move the application to another port"
            )
    return cfg


def parse_annotations_file(text: str, source: str = "annotations file") -> dict[str, str]:
    """Annotations from a file: a JSON object, or the Downward API format (`key="quoted value"` lines)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise CaptureConfigError(f"{source}: not valid JSON: {e}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise CaptureConfigError(f"{source}: want a JSON object of string values")
        return {str(k): v for k, v in data.items()}
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, quoted = line.partition("=")
        if not sep or not quoted.startswith('"'):
            raise CaptureConfigError(
                f'{source}:{n}: want key="value" (the Downward API format), got {line!r}'
            )
        try:
            value = json.loads(quoted)  # Go's %q quoting agrees with JSON for what annotations hold
        except json.JSONDecodeError as e:
            raise CaptureConfigError(f"{source}:{n}: cannot read the quoted value {quoted!r}: {e}") from None
        out[key.strip()] = value
    return out
