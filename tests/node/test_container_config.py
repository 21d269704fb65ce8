"""Pure pieces of container configuration: $(VAR), command/args, env, identity, capabilities, pod files,
images, quantities."""

from __future__ import annotations

import base64

import pytest

from minimesh.cluster.local.images import ImageStore, UnknownImage, parse_reference
from minimesh.cluster.local.node import quantity
from minimesh.cluster.local.node.envvars import PodContext, make_environment, service_env
from minimesh.cluster.local.node.expansion import command_line, expand
from minimesh.cluster.local.node.podfiles import pod_files, resolv_conf
from minimesh.cluster.local.node.security import (
    DEFAULT_CAPS,
    ConfigError,
    Passwd,
    effective_capabilities,
    resolve_identity,
)

POD = {
    "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"},
                 "annotations": {"team": "a"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "sa1",
             "containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}]},
}
CTX = PodContext(POD, "10.244.0.7", "198.18.0.2", {"cpu": "2", "memory": "1Gi"})


def test_expand_like_kubernetes() -> None:
    env = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)", env) == "x-y"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$$", env) == "$"
    assert expand("a$", env) == "a$"
    assert expand("$(A", env) == "$(A"
    assert expand("$X", env) == "$X"


def test_command_and_args_override_the_image() -> None:
    env = {"N": "3"}
    assert command_line(["ep"], ["cmd"], None, None, env) == ["ep", "cmd"]
    assert command_line(["ep"], ["cmd"], None, ["--n=$(N)"], env) == ["ep", "--n=3"]
    assert command_line(["ep"], ["cmd"], ["run", "$(N)"], None, env) == ["run", "3"]
    assert command_line(["ep"], ["cmd"], ["run"], ["a"], env) == ["run", "a"]


def test_environment_order_sources_and_errors() -> None:
    cms = {("shop", "cfg"): {"data": {"COLOR": "blue", "bad key": "x"}}}
    secrets = {("shop", "s"): {"data": {"PASSWORD": base64.b64encode(b"hunter2").decode()}}}
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "s"}}],
        "env": [
            {"name": "GREETING", "value": "hello $(CFG_COLOR) $(MY_POD)"},
            {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "CPU_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "PASSWORD"}}},
        ],
    }
    svc = {"metadata": {"name": "details-v1", "namespace": "shop"},
           "spec": {"clusterIP": "10.96.3.4", "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]}}
    r = make_environment(CTX, container, [svc], lambda ns, n: cms.get((ns, n)), lambda ns, n: secrets.get((ns, n)))
    env = r.env
    assert env["CFG_COLOR"] == "blue" and env["PASSWORD"] == "hunter2" and env["KEY"] == "hunter2"
    assert env["GREETING"] == "hello blue $(MY_POD)"  # MY_POD is defined after GREETING
    assert (env["MY_POD"], env["APP"], env["IP"]) == ("web-1", "web", "10.244.0.7")
    assert (env["MEM"], env["CPU"], env["CPU_REQ"]) == ("64", "2", "250")
    assert env["DETAILS_V1_SERVICE_HOST"] == "10.96.3.4" and env["DETAILS_V1_PORT_9080_TCP_ADDR"] == "10.96.3.4"
    assert r.warnings and "CFG_bad key" in r.warnings[0]

    with pytest.raises(ConfigError, match='configmap "nope" not found'):
        make_environment(CTX, {"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]},
                         [], lambda *_: None, lambda *_: None)
    with pytest.raises(ConfigError, match="couldn't find key nope in ConfigMap shop/cfg"):
        make_environment(CTX, {"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]},
                         [], lambda ns, n: cms.get((ns, n)), lambda *_: None)
    ok = make_environment(CTX, {"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}}]},
                          [], lambda *_: None, lambda *_: None)
    assert "X" not in ok.env


def test_service_link_variables() -> None:
    env = service_env([{"metadata": {"name": "kubernetes"}, "spec": {"clusterIP": "10.96.0.1",
                                                                     "ports": [{"name": "https", "port": 443}]}}])
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == "tcp://10.96.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP_PROTO"] == "tcp"


PW = Passwd.parse("root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
                  "root:x:0:\nwww-data:x:33:\nvideo:x:44:app\n")


def test_identity() -> None:
    pod_spec = {"securityContext": {"runAsUser": 1000, "fsGroup": 2000, "supplementalGroups": [3000]}}
    ident = resolve_identity(pod_spec, {"name": "c"}, "", PW)
    assert (ident.uid, ident.gid) == (1000, 1000) and ident.groups == [44, 3000, 2000]
    ident = resolve_identity({}, {"name": "c", "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}}, "", PW)
    assert (ident.uid, ident.gid, ident.groups) == (1337, 1337, [])
    assert resolve_identity({}, {"name": "c"}, "www-data", PW).uid == 33
    assert resolve_identity({}, {"name": "c"}, "100:101", PW).gid == 101
    with pytest.raises(ConfigError, match="runAsNonRoot and image will run as root"):
        resolve_identity({"securityContext": {"runAsNonRoot": True}}, {"name": "c"}, "", PW)
    with pytest.raises(ConfigError, match="non-numeric user"):
        resolve_identity({"securityContext": {"runAsNonRoot": True}}, {"name": "c"}, "www-data", PW)


def test_capabilities() -> None:
    assert effective_capabilities(None) == [c for c in effective_capabilities({}) if c in DEFAULT_CAPS]
    caps = effective_capabilities({"capabilities": {"add": ["NET_ADMIN", "CAP_NET_RAW"], "drop": ["KILL"]}})
    assert "net_admin" in caps and "kill" not in caps and "chown" in caps
    assert effective_capabilities({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}) == ["net_bind_service"]
    assert "sys_admin" in effective_capabilities({"privileged": True})
    with pytest.raises(ConfigError, match="unknown capability"):
        effective_capabilities({"capabilities": {"add": ["FLY"]}})


def test_pod_files() -> None:
    pod = {"metadata": {"name": "web-1", "namespace": "shop"},
           "spec": {"hostAliases": [{"ip": "1.2.3.4", "hostnames": ["foo", "bar"]}], "subdomain": "sub"}}
    f = pod_files(pod, "10.244.0.9")
    assert f.hostname == "web-1\n"
    assert "10.244.0.9\tweb-1.sub.shop.svc.cluster.local\tweb-1\n" in f.hosts
    assert "# Entries added by HostAliases.\n1.2.3.4\tfoo\tbar\n" in f.hosts
    assert f.resolv_conf == ("search shop.svc.cluster.local svc.cluster.local cluster.local\n"
                             "nameserver 10.96.0.10\noptions ndots:5\n")
    none = {"metadata": {"name": "p", "namespace": "x"},
            "spec": {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a.b"],
                                                         "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}
    assert resolv_conf(none) == "search a.b\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
    default = {"metadata": {"name": "p", "namespace": "x"}, "spec": {"dnsPolicy": "Default"}}
    assert resolv_conf(default, "nameserver 9.9.9.9\nsearch corp\n") == "search corp\nnameserver 9.9.9.9\n"
    merged = {"metadata": {"name": "p", "namespace": "x"},
              "spec": {"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}}
    assert resolv_conf(merged).endswith("options ndots:1\n")


def test_image_references(tmp_path) -> None:
    assert parse_reference("nginx").canonical == "docker.io/library/nginx:latest"
    assert parse_reference("docker.io/library/nginx:1.27@sha256:abc").tag == "1.27"
    assert parse_reference("curlimages/curl:8.1.0").repository == "curlimages/curl"
    assert parse_reference("localhost:5000/x:1").canonical == "localhost:5000/x:1"
    store = ImageStore("/src", "/venv", tmp_path)
    mm = store.resolve("minimesh/minimesh:dev")
    assert [(b.source, b.target) for b in mm.binds] == [("/src", "/opt/minimesh"), ("/venv", "/opt/minimesh-venv")]
    assert mm.env["PATH"].startswith("/opt/minimesh-venv/bin:")
    assert store.resolve("nginx:1.27").cmd == ["nginx", "-g", "daemon off;"]
    assert store.resolve("busybox").cmd == ["sh"]
    with pytest.raises(UnknownImage, match="known images: minimesh/minimesh"):
        store.resolve("quay.io/someone/thing:v1")


def test_quantities() -> None:
    assert quantity.parse("250m") * 1000 == 250
    assert quantity.parse("64Mi") == 64 * 2**20
    assert quantity.parse("1e3") == 1000
    assert quantity.parse("2") == 2
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity.parse("12 apples")
