"""A bookinfo service's settings, from its command line and environment (pure: env passed in).

Environment (Kubernetes sets these in the Deployments of minimesh/manifests/bookinfo.yaml):
  SERVICE_VERSION   v1, v2, ... (reviews: v1 no stars, v2 black stars, v3 red stars)
  POD_NAME          shown by reviews on the page (default: the hostname, which is the pod name)
  DETAILS_URL, REVIEWS_URL, RATINGS_URL   where the dependencies are (default http://<name>:9080);
                    never `*_PORT`/`*_SERVICE_HOST`, which Kubernetes' service links already use
  UPSTREAM_TIMEOUT  seconds per outbound attempt from productpage (default 3, as Istio's productpage)
  RATINGS_TIMEOUT   seconds for reviews -> ratings (default 10 for v2, 2.5 for v3, as Istio's reviews)
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from minimesh.apps.bookinfo import PORT, SERVICES
from minimesh.apps.bookinfo.data import reviews_version_rules

VERSION_RE = re.compile(r"^v[0-9]+$")
# Istio's reviews: black stars (v2) wait 10 s for ratings, red stars (v3) give up after 2.5 s.
DEFAULT_RATINGS_TIMEOUT = {"v2": 10.0, "v3": 2.5}


class SettingsError(ValueError):
    """A bad setting; the message names the variable or option and the value."""


@dataclass(frozen=True)
class Settings:
    service: str
    version: str = "v1"
    host: str = "0.0.0.0"
    port: int = PORT
    pod_name: str = ""
    details_url: str = f"http://details:{PORT}"
    reviews_url: str = f"http://reviews:{PORT}"
    ratings_url: str = f"http://ratings:{PORT}"
    upstream_timeout: float = 3.0
    ratings_timeout: float = 10.0


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    parts = urlsplit(value)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise SettingsError(f"{name}={value!r}: want a plain http URL without a path, like {default}")
    return value.rstrip("/")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: want a number of seconds, like 3 or 0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name}={raw!r}: want a positive number of seconds")
    return value


def settings_from(service: str, *, host: str, port: int, env: Mapping[str, str]) -> Settings:
    if service not in SERVICES:
        raise SettingsError(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
    if not 0 <= port <= 65535:
        raise SettingsError(f"--port {port}: want 0-65535 (0 picks a free port)")
    version = env.get("SERVICE_VERSION", "").strip() or "v1"
    if not VERSION_RE.match(version):
        raise SettingsError(f"SERVICE_VERSION={version!r}: want v1, v2, ...")
    if service == "reviews":
        try:
            reviews_version_rules(version)
        except ValueError as e:
            raise SettingsError(str(e)) from None
    return Settings(
        service=service,
        version=version,
        host=host,
        port=port,
        pod_name=env.get("POD_NAME", "").strip() or socket.gethostname(),
        details_url=_url(env, "DETAILS_URL", f"http://details:{PORT}"),
        reviews_url=_url(env, "REVIEWS_URL", f"http://reviews:{PORT}"),
        ratings_url=_url(env, "RATINGS_URL", f"http://ratings:{PORT}"),
        upstream_timeout=_seconds(env, "UPSTREAM_TIMEOUT", 3.0),
        ratings_timeout=_seconds(env, "RATINGS_TIMEOUT", DEFAULT_RATINGS_TIMEOUT.get(version, 10.0)),
    )
