"""Properties of injection over generated pods: the patch always applies, only adds, keeps everything the
pod had, and injecting an injected pod adds nothing (idempotency)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimesh.inject import names, patch
from minimesh.inject.injector import decide
from minimesh.inject.template import InjectorConfig

ENABLED = {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}

dns = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
# annotation keys with the characters JSON Pointer must escape
keys = st.builds(lambda p, n: f"{p}/{n}" if p else n,
                 st.sampled_from(["", "example.com", "a~b.io", "x/y"]), st.from_regex(r"[a-z~/]{1,8}", fullmatch=True))
app_ports = st.integers(min_value=1024, max_value=14000)
probe = st.one_of(
    st.none(),
    st.builds(lambda p, t: {"httpGet": {"path": "/h", "port": p}, **({"timeoutSeconds": t} if t else {})},
              st.one_of(app_ports, st.just("http")), st.one_of(st.none(), st.integers(1, 5))),
    st.builds(lambda p: {"tcpSocket": {"port": p}}, app_ports),
    st.just({"exec": {"command": ["true"]}}),
)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    container_names = draw(st.lists(dns, min_size=n, max_size=n, unique=True).filter(
        lambda ns: not any(x.startswith("minimesh") for x in ns)))
    containers = []
    for name in container_names:
        c: dict[str, Any] = {"name": name, "image": "app"}
        if draw(st.booleans()):
            c["ports"] = [{"name": "http", "containerPort": draw(app_ports)}]
        for field in ("readinessProbe", "livenessProbe", "startupProbe"):
            p = draw(probe)
            if p is not None:
                c[field] = p
        containers.append(c)
    spec: dict[str, Any] = {"containers": containers}
    if draw(st.booleans()):
        spec["initContainers"] = [{"name": f"init-{i}", "image": "busybox"} for i in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        spec["volumes"] = [{"name": f"v{i}", "emptyDir": {}} for i in range(draw(st.integers(0, 2)))]
    meta: dict[str, Any] = {}
    if draw(st.booleans()):
        meta["name"] = draw(dns)
    for key in ("annotations", "labels"):
        if draw(st.booleans()):
            meta[key] = draw(st.dictionaries(keys, st.text(max_size=5), max_size=4))
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": spec}
    if meta or draw(st.booleans()):
        pod["metadata"] = meta
    return pod


def _subset(before: Any, after: Any, path: str = "") -> None:
    """Everything in `before` is still in `after`, except what injection rewrites on purpose."""
    if isinstance(before, dict):
        assert isinstance(after, dict), path
        for k, v in before.items():
            if k in ("readinessProbe", "livenessProbe", "startupProbe") or (path.endswith("/annotations") and k.startswith("prometheus.io/")):
                continue
            assert k in after, f"{path}/{k} disappeared"
            _subset(v, after[k], f"{path}/{k}")
    elif isinstance(before, list):
        assert isinstance(after, list) and len(after) >= len(before), path
        for i, (b, a) in enumerate(zip(before, [x for x in after if not _injected(x)], strict=False)):
            _subset(b, a, f"{path}/{i}")
    else:
        assert before == after, path


def _injected(item: Any) -> bool:
    return isinstance(item, dict) and item.get("name") in (names.INIT_CONTAINER, names.PROXY_CONTAINER)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods(), st.booleans())
def test_patch_applies_keeps_the_pod_and_is_idempotent(pod: dict[str, Any], native: bool) -> None:
    original = copy.deepcopy(pod)
    d = decide(pod, "shop", ENABLED, InjectorConfig(native_sidecars=native))
    assert pod == original, "decide must not change its input"
    assert d.skip is None and d.patch
    assert all(op["op"] in ("add", "replace") for op in d.patch)
    out = jsonpatch.apply_patch(pod, d.patch)
    _subset(original, out)

    spec = out["spec"]
    where = spec["initContainers"] if native else spec["containers"]
    assert [c["name"] for c in where].count(names.PROXY_CONTAINER) == 1
    assert [c["name"] for c in spec["initContainers"]].count(names.INIT_CONTAINER) == 1
    if native:
        assert [c["name"] for c in spec["initContainers"][:2]] == [names.INIT_CONTAINER, names.PROXY_CONTAINER]
    else:
        assert spec["initContainers"][-1]["name"] == names.INIT_CONTAINER
    assert len({v["name"] for v in spec["volumes"]}) == len(spec["volumes"])
    for key, value in (original.get("metadata") or {}).get("annotations", {}).items():
        if not key.startswith("prometheus.io/"):
            assert out["metadata"]["annotations"][key] == value  # escaped keys land on the right member
    status = json.loads(out["metadata"]["annotations"][names.STATUS_ANNOTATION])
    assert set(status["volumes"]) <= {v["name"] for v in spec["volumes"]}

    again = decide(out, "shop", ENABLED, InjectorConfig(native_sidecars=native))
    assert again.patch == [] and again.skip == "already_injected"


@given(st.text(max_size=20))
def test_escape_round_trips_through_a_json_pointer(token: str) -> None:
    doc = {token: 1}
    assert jsonpatch.JsonPointer("/" + patch.escape(token)).resolve(doc) == 1
