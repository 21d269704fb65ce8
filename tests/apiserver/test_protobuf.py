"""Protobuf request bodies: the decoder's rules, its schema checked against kubectl and OpenAPI, and the
real kubectl v1.32 creating objects over protobuf that equal what the JSON path stores."""

from __future__ import annotations

import base64
import json
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.descriptor_pb2 import FileDescriptorProto

from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.apiserver import schema
from minimesh.cluster.local.apiserver.protobuf import catalog, decode_body, jsonform, regen

REPO_PKG = Path(__file__).resolve().parents[2] / "minimesh" / "cluster" / "local" / "apiserver" / "protobuf"
KUBECTL = shutil.which("kubectl")
PB = "application/vnd.kubernetes.protobuf"

core = catalog.module(catalog.GROUP_SOURCES[("", "v1")])
apps = catalog.module(catalog.GROUP_SOURCES[("apps", "v1")])
authn = catalog.module(catalog.GROUP_SOURCES[("authentication.k8s.io", "v1")])
admreg = catalog.module(catalog.GROUP_SOURCES[("admissionregistration.k8s.io", "v1")])
meta = catalog.module(catalog.META_SOURCE)
runtime = catalog.module(catalog.RUNTIME_SOURCE)


def envelope(api_version: str, kind: str, raw: bytes, **extra: str) -> bytes:
    unknown = runtime.Unknown(typeMeta=runtime.TypeMeta(apiVersion=api_version, kind=kind), raw=raw, **extra)
    return b"k8s\x00" + unknown.SerializeToString()


def decode(api_version: str, kind: str, msg: Any) -> dict[str, Any]:
    return decode_body(envelope(api_version, kind, msg.SerializeToString()))


def api_error(raw: bytes) -> E.ApiError:
    with pytest.raises(E.ApiError) as e:
        decode_body(raw)
    return e.value


# ---- the decoder's rules ----------------------------------------------------------------------------
def test_namespace_bytes_kubectl_sends() -> None:
    """`kubectl create namespace x`, byte for byte: Go value fields are all on the wire, even when empty."""
    raw = bytes.fromhex("6b3873000a0f0a02763112094e616d657370616365121" "90a110a017812001a00220"
                        "02a00320038004200120" "01a020a001a002200")
    assert decode_body(raw) == {"kind": "Namespace", "apiVersion": "v1",
                                "metadata": {"name": "x", "creationTimestamp": None}, "spec": {}, "status": {}}


def test_pointer_zero_is_kept_value_zero_is_unset() -> None:
    spec = apps.DeploymentSpec(replicas=0, minReadySeconds=0, paused=False, template=core.PodTemplateSpec())
    got = decode("apps/v1", "Deployment", apps.Deployment(metadata=meta.ObjectMeta(name="d", generation=0), spec=spec))
    assert got["spec"]["replicas"] == 0  # *int32 set to 0: the user asked for zero replicas
    assert "minReadySeconds" not in got["spec"] and "paused" not in got["spec"]  # int32/bool values: unset
    assert got["metadata"] == {"name": "d", "creationTimestamp": None}
    assert got["spec"]["selector"] is None  # *LabelSelector without omitempty: Go writes null
    assert got["spec"]["strategy"] == {} and got["status"] == {}  # structs are always written
    assert got["spec"]["template"]["spec"]["containers"] is None  # []Container without omitempty
    pvc = core.PersistentVolumeClaim(spec=core.PersistentVolumeClaimSpec(storageClassName=""))
    assert decode("v1", "PersistentVolumeClaim", pvc)["spec"]["storageClassName"] == ""  # *string ""


def test_required_value_fields_keep_zero() -> None:
    port = core.ServicePort(port=0, name="", protocol="TCP")
    got = decode("v1", "Service", core.Service(spec=core.ServiceSpec(ports=[port])))
    assert got["spec"]["ports"] == [{"protocol": "TCP", "port": 0, "targetPort": 0}]  # port has no omitempty


def test_special_types() -> None:
    ts = meta.Time(seconds=1700000000, nanos=999_000_000)
    mt = meta.MicroTime(seconds=1700000000, nanos=123_456_789)
    ev = core.Event(metadata=meta.ObjectMeta(name="e", creationTimestamp=ts, deletionTimestamp=meta.Time()),
                    firstTimestamp=ts, eventTime=mt, count=3)
    got = decode("v1", "Event", ev)
    assert got["metadata"]["creationTimestamp"] == "2023-11-14T22:13:20Z"  # metav1.Time: whole seconds
    assert got["metadata"]["deletionTimestamp"] is None  # the zero time
    assert got["eventTime"] == "2023-11-14T22:13:20.123456Z" and got["count"] == 3
    c = core.Container(name="c", ports=[core.ContainerPort(containerPort=80)],
                       resources=core.ResourceRequirements(limits={"cpu": core_quantity("500m")}),
                       readinessProbe=core.Probe(handler=core.ProbeHandler(
                           httpGet=core.HTTPGetAction(path="/", port=int_or_string("http")))))
    got = decode("v1", "Pod", core.Pod(spec=core.PodSpec(containers=[c])))["spec"]["containers"][0]
    assert got["resources"] == {"limits": {"cpu": "500m"}}
    assert got["readinessProbe"] == {"httpGet": {"path": "/", "port": "http"}}  # Probe.handler is inline
    assert got["ports"] == [{"containerPort": 80}]


def core_quantity(s: str) -> Any:
    return catalog.module("k8s.io/apimachinery/pkg/api/resource/generated.proto").Quantity(string=s)


def int_or_string(v: int | str) -> Any:
    m = catalog.module("k8s.io/apimachinery/pkg/util/intstr/generated.proto")
    return m.IntOrString(type=1, strVal=v) if isinstance(v, str) else m.IntOrString(type=0, intVal=v)


def test_inline_renamed_bytes_and_string_lists() -> None:
    vol = core.Volume(name="v", volumeSource=core.VolumeSource(configMap=core.ConfigMapVolumeSource(
        localObjectReference=core.LocalObjectReference(name="cm"), defaultMode=0o644)))
    got = decode("v1", "Pod", core.Pod(spec=core.PodSpec(volumes=[vol])))
    assert got["spec"]["volumes"] == [{"name": "v", "configMap": {"name": "cm", "defaultMode": 0o644}}]
    secret = core.Secret(data={"k": b"\x00\xffv"}, stringData={"s": "t"}, type="Opaque")
    got = decode("v1", "Secret", secret)
    assert got["data"] == {"k": base64.b64encode(b"\x00\xffv").decode()} and got["stringData"] == {"s": "t"}
    tr = authn.TokenRequest(spec=authn.TokenRequestSpec(
        audiences=["a"], expirationSeconds=600,
        boundObjectRef=authn.BoundObjectReference(kind="Pod", name="p", uID="u-1")))
    got = decode("authentication.k8s.io/v1", "TokenRequest", tr)["spec"]
    assert got == {"audiences": ["a"], "expirationSeconds": 600, "boundObjectRef": {"kind": "Pod", "name": "p", "uid": "u-1"}}
    review = authn.TokenReview(spec=authn.TokenReviewSpec(token="t"), status=authn.TokenReviewStatus(
        user=authn.UserInfo(username="u", extra={"scopes": authn.ExtraValue(items=["a", "b"])})))
    assert decode("authentication.k8s.io/v1", "TokenReview", review)["status"]["user"]["extra"] == {"scopes": ["a", "b"]}
    hook = admreg.MutatingWebhookConfiguration(Webhooks=[admreg.MutatingWebhook(
        name="w", clientConfig=admreg.WebhookClientConfig(caBundle=b"PEM"), sideEffects="None",
        admissionReviewVersions=["v1"])])
    got = decode("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", hook)
    assert got["webhooks"][0]["clientConfig"] == {"caBundle": base64.b64encode(b"PEM").decode()}


def test_raw_extension_holds_json_or_protobuf() -> None:
    inner = core.ConfigMap(metadata=meta.ObjectMeta(name="inner"), data={"a": "b"})
    nested = envelope("v1", "ConfigMap", inner.SerializeToString())
    for raw, want in [(b'{"x": [1, 2]}', {"x": [1, 2]}),
                      (nested, {"kind": "ConfigMap", "apiVersion": "v1", "data": {"a": "b"},
                                "metadata": {"name": "inner", "creationTimestamp": None}})]:
        rev = apps.ControllerRevision(metadata=meta.ObjectMeta(name="r"), data=runtime.RawExtension(raw=raw), revision=1)
        assert decode("apps/v1", "ControllerRevision", rev)["data"] == want
    bad = apps.ControllerRevision(data=runtime.RawExtension(raw=b"\x01not json"))
    err = api_error(envelope("apps/v1", "ControllerRevision", bad.SerializeToString()))
    assert err.code == 400 and "data: the embedded object is neither protobuf nor JSON" in err.message


def test_delete_options_in_any_group_version() -> None:
    opts = meta.DeleteOptions(gracePeriodSeconds=0, preconditions=meta.Preconditions(uid="u"),
                              propagationPolicy="Foreground", dryRun=["All"])
    for gv in ("v1", "apps/v1", "meta.k8s.io/v1"):
        assert decode(gv, "DeleteOptions", opts) == {
            "kind": "DeleteOptions", "apiVersion": gv, "gracePeriodSeconds": 0, "preconditions": {"uid": "u"},
            "propagationPolicy": "Foreground", "dryRun": ["All"]}


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (1, "1ns"), (1100, "1.1µs"), (2_200_000, "2.2ms"), (1_500_000_000, "1.5s"),
    (90 * 10**9, "1m30s"), (3600 * 10**9, "1h0m0s"), (3723_500_000_000, "1h2m3.5s"), (-5 * 10**9, "-5s"),
])
def test_go_duration(ns: int, text: str) -> None:
    assert jsonform.go_duration(ns) == text


def field(number: int, wire: int, payload: bytes) -> bytes:
    key, out = (number << 3) | wire, b""
    while key >= 0x80:
        out, key = out + bytes([key & 0x7F | 0x80]), key >> 7
    return out + bytes([key]) + payload


def test_unknown_fields_zero_dropped_nonzero_refused() -> None:
    cm = core.ConfigMap(metadata=meta.ObjectMeta(name="c")).SerializeToString()
    zero = field(999, 0, b"\x00") + field(1008, 2, b"\x00") + field(1009, 2, b"\x02\x08\x00")
    # a newer client's unset value fields: 0, "", a struct of zeros
    assert decode_body(envelope("v1", "ConfigMap", cm + zero))["metadata"]["name"] == "c"
    err = api_error(envelope("v1", "ConfigMap", cm + field(999, 0, b"\x07")))  # field 999 = 7: would be lost
    assert err.code == 400 and "field number 999 of k8s.io.api.core.v1.ConfigMap is not known" in err.message
    err = api_error(envelope("v1", "ConfigMap", cm + field(1008, 2, b"\x01x")))  # "x"
    assert "field number 1008" in err.message
    container = core.Container(name="c").SerializeToString() + field(999, 0, b"\x01")
    spec = field(2, 2, bytes([len(container)]) + container)  # PodSpec.containers
    err = api_error(envelope("v1", "Pod", field(2, 2, bytes([len(spec)]) + spec)))  # Pod.spec
    assert "spec.containers[0]: field number 999 of k8s.io.api.core.v1.Container" in err.message


@pytest.mark.parametrize(("raw", "code", "says"), [
    (b'{"kind": "ConfigMap"}', 400, "starts with the 4 bytes 'k8s\\x00'"),
    (b"k8s\x00\x0a\xff", 400, "the runtime.Unknown envelope is malformed"),
    (envelope("", "ConfigMap", b""), 400, "the envelope names no apiVersion"),
    (envelope("v1", "ConfigMap", b"\x0a\x05\x0a"), 400, "not a valid k8s.io.api.core.v1.ConfigMap"),
    (envelope("v1", "ConfigMap", b"", contentEncoding="gzip"), 400, "content encoding 'gzip' is not supported"),
    (envelope("example.com/v1", "Widget", b""), 415, 'kind "Widget" of "example.com/v1" cannot be sent'),
    (envelope("v1", "PodSpec", b""), 415, 'kind "PodSpec" of "v1"'),
    (envelope("v1", "DESCRIPTOR", b""), 415, 'kind "DESCRIPTOR"'),
    (envelope("v1", "Event", core.Event(eventTime=meta.MicroTime(seconds=1, nanos=-1)).SerializeToString()),
     400, "eventTime: nanos -1 is out of range"),
    (envelope("v1", "Service", core.Service(spec=core.ServiceSpec(ports=[core.ServicePort(
        targetPort=catalog.module("k8s.io/apimachinery/pkg/util/intstr/generated.proto").IntOrString(type=2))]))
        .SerializeToString()), 400, "spec.ports[0].targetPort: IntOrString type 2"),
])
def test_bad_bodies_are_refused_clearly(raw: bytes, code: int, says: str) -> None:
    err = api_error(raw)
    assert err.code == code and says in err.message, err.message
    assert err.reason == ("BadRequest" if code == 400 else "UnsupportedMediaType")


# ---- the schema ------------------------------------------------------------------------------------
def _all_messages() -> list[Any]:
    out = []
    for src in catalog.sources():
        out += list(catalog.module(src).DESCRIPTOR.message_types_by_name.values())
    return out


def _json_type(f: Any) -> str:
    fd = f.fd
    if f.map_value is not None:
        return "object"
    if fd.is_repeated:
        return "array"
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        name = fd.message_type.full_name
        if name in (jsonform.TIME, jsonform.MICRO_TIME, jsonform.DURATION):
            return "string"
        if name in (jsonform.QUANTITY, jsonform.INT_OR_STRING):
            return "int-or-string"
        return "array" if name in jsonform.STRING_LISTS else "object"
    if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return "string"
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "boolean"
    return "number" if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT) else "integer"


def _schema_type(node: dict[str, Any]) -> str:
    node = schema.resolve(node)
    one = node.get("oneOf")
    if one:
        return "int-or-string"
    types = schema.types_of(node) - {"null"}
    return types.pop() if len(types) == 1 else "object"  # RawExtension, FieldsV1: free-form


def test_every_field_has_its_json_name_and_type_in_openapi() -> None:
    """The JSON the decoder writes uses names and types of the v1.32 OpenAPI definitions (which the JSON
    path validates with): proves INLINE, JSON_NAMES and STRING_LISTS are complete."""
    problems, checked = [], 0

    def fields_of(desc: Any) -> list[Any]:  # inline fields spread into their parent
        out = []
        for f in jsonform._plan(desc).fields.values():
            out += fields_of(f.fd.message_type) if f.inline else [f]
        return out

    for desc in _all_messages():
        d = schema.definitions().get("io.k8s." + desc.full_name.removeprefix("k8s.io."))
        props = (d or {}).get("properties")
        if not props:
            continue  # Time, Quantity, ... (special) and types never sent as objects of their own
        for f in fields_of(desc):
            checked += 1
            where = f"{desc.full_name}.{f.fd.name}"
            if f.name not in props:
                problems.append(f"{where}: JSON name {f.name!r} is not in the definition")
            elif (want := _schema_type(props[f.name])) != (got := _json_type(f)):
                problems.append(f"{where}: the decoder writes {got}, the definition says {want}")
    assert not problems, "\n".join(problems)
    assert checked > 1500
    descs = {d.full_name: d for d in _all_messages()}
    for parent, field in [*jsonform.INLINE, *jsonform.JSON_NAMES]:
        assert field in descs[parent].fields_by_name, f"stale entry {parent}.{field}"


@pytest.fixture(scope="module")
def kubectl_schema() -> dict[str, FileDescriptorProto]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    binary = Path(KUBECTL).resolve()
    if regen.kubectl_minor(binary) != "v1.32":
        pytest.skip("the schema is rendered from kubectl v1.32")
    return regen.kubectl_descriptors(binary)


def test_schema_equals_what_kubectl_encodes_with(kubectl_schema: dict[str, FileDescriptorProto]) -> None:
    """Field numbers, names, types and value-vs-pointer of every message, against kubectl's own descriptors."""

    def shape(fdp: FileDescriptorProto) -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        for m in fdp.message_type:
            rows = [(f.name, f.number, f.label, f.type, f.type_name.rsplit(".", 1)[-1], regen._nullable_false(f.options))
                    for f in m.field]
            for n in m.nested_type:
                rows += [(n.name, f.name, f.number, f.type, f.type_name.rsplit(".", 1)[-1]) for f in n.field]
            out[m.name] = rows
        return out

    names = regen.closure(kubectl_schema, catalog.sources())
    assert len(names) == 18
    for name in names:
        ours = FileDescriptorProto()
        catalog.module(name).DESCRIPTOR.CopyToProto(ours)
        assert ours.package == kubectl_schema[name].package
        assert shape(ours) == shape(kubectl_schema[name]), name


def test_generated_files_are_up_to_date(tmp_path: Path, kubectl_schema: dict[str, FileDescriptorProto]) -> None:
    """regen.py reproduces the committed proto/ (from kubectl) and gen/ (from proto/) byte for byte."""
    regen.write_protos(Path(KUBECTL or "").resolve(), tmp_path / "proto")
    regen.compile_protos(tmp_path / "proto", tmp_path / "gen")
    for sub in ("proto", "gen"):
        committed = {p.name: p.read_bytes() for p in (REPO_PKG / sub).iterdir() if p.is_file()}
        fresh = {p.name: p.read_bytes() for p in (tmp_path / sub).iterdir() if p.is_file()}
        assert fresh.keys() == committed.keys(), sub
        stale = [n for n in fresh if fresh[n] != committed[n]]
        assert not stale, f"run `python -m minimesh.cluster.local.apiserver.protobuf.regen --from-kubectl`: {stale}"


def test_schema_is_imported_only_for_a_protobuf_body() -> None:
    """The API server's modules do not load the generated schema (half a megabyte) at start-up."""
    code = ("import json, sys; import minimesh.cluster.local.apiserver.server, minimesh.cluster.local.apiserver.extensions;"
            "print(json.dumps(sorted(m for m in sys.modules if 'apiserver.protobuf' in m)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == []


# ---- over HTTP, with the real kubectl --------------------------------------------------------------
def request(cluster: Any, method: str, path: str, body: bytes, ct: str = PB) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(cluster.srv.pki.ca_cert))
    req = urllib.request.Request(cluster.srv.url + path, data=body, method=method, headers={
        "Content-Type": ct, "Accept": f"{PB}, application/json", "Authorization": f"Bearer {cluster.srv.pki.token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_errors_and_delete_options(cluster: Any) -> None:
    ns = cluster.namespace("pbh")
    code, status = request(cluster, "POST", f"/api/v1/namespaces/{ns}/configmaps", b"\x00garbage")
    assert code == 400 and status["kind"] == "Status" and "k8s\\x00" in status["message"]
    widget = envelope("example.com/v1", "Widget", b"")
    code, status = request(cluster, "POST", f"/api/v1/namespaces/{ns}/configmaps", widget)
    assert code == 415 and status["reason"] == "UnsupportedMediaType" and '"Widget"' in status["message"]
    cm = core.ConfigMap(metadata=meta.ObjectMeta(name="c"), data={"a": "b"})
    code, created = request(cluster, "POST", f"/api/v1/namespaces/{ns}/configmaps", envelope("v1", "ConfigMap", cm.SerializeToString()))
    assert code == 201 and created["data"] == {"a": "b"}
    # DELETE with protobuf DeleteOptions: the precondition is read from the body
    wrong = meta.DeleteOptions(preconditions=meta.Preconditions(uid="not-the-uid"))
    code, status = request(cluster, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/c", envelope("v1", "DeleteOptions", wrong.SerializeToString()))
    assert code == 409 and "not-the-uid" in status["message"]
    right = meta.DeleteOptions(preconditions=meta.Preconditions(uid=created["metadata"]["uid"]))
    code, _ = request(cluster, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/c", envelope("v1", "DeleteOptions", right.SerializeToString()))
    assert code == 200
    code, _ = request(cluster, "GET", f"/api/v1/namespaces/{ns}/configmaps/c", b"", ct="application/json")
    assert code == 404


@pytest.fixture(scope="module")
def kubectl(cluster: Any) -> Any:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    cache = cluster.dir / "kubectl-cache-pb"

    def run(*args: str, ok: bool = True, stdin: str | None = None, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig or cluster.kubeconfig), "--cache-dir", str(cache), *args],
                           capture_output=True, text=True, input=stdin, timeout=60)
        if ok:
            assert p.returncode == 0, f"kubectl {' '.join(args)} failed: {p.stderr[-2000:]}"
        return p

    return run


def sent_bodies(stderr: str) -> list[bytes | dict[str, Any]]:
    """Request bodies from kubectl -v=9: protobuf as hex dumps (Go's hex.Dump), JSON as text."""
    out: list[bytes | dict[str, Any]] = []
    for block in re.findall(r'"Request Body" body=<\n(.*?)\n >', stderr, re.S):
        lines = block.splitlines()
        if lines[0].lstrip().startswith("{"):
            out.append(json.loads("".join(line.strip() for line in lines)))
        else:
            out.append(b"".join(bytes.fromhex(line.lstrip("\t")[10:59].replace(" ", "")) for line in lines))
    return out


def with_dry_run(args: list[str]) -> list[str]:
    cut = args.index("--") if "--" in args else len(args)
    return [*args[:cut], "--dry-run=client", "-o", "json", *args[cut:]]


def normalized(obj: dict[str, Any], ns: str) -> dict[str, Any]:
    """What differs between two creations of the same object: uid, namespace, times, allocations, the
    random name of a pod's token volume."""
    text = json.dumps(obj).replace(obj["metadata"]["uid"], "<uid>").replace(ns, "<ns>")
    o = json.loads(re.sub(r"kube-api-access-\w+", "kube-api-access-<random>", text))
    for k in ("creationTimestamp", "resourceVersion"):
        o["metadata"].pop(k, None)
    spec = o.get("spec") or {}
    spec.pop("clusterIP", None), spec.pop("clusterIPs", None)
    for p in spec.get("ports") or []:
        p.pop("nodePort", None)
    return o


CREATES = [  # (id, kubectl arguments ({ns}: the namespace), the object to read back, protobuf on the wire?)
    ("namespace", ["create", "namespace", "{ns}-extra"], "namespace/{ns}-extra", True),
    ("deployment", ["create", "deployment", "web", "--image=nginx", "--replicas=2", "--port=8080"], "deployment/web", True),
    ("deployment-zero", ["create", "deployment", "zero", "--image=nginx", "--replicas=0"], "deployment/zero", True),
    ("configmap", ["create", "configmap", "c", "--from-literal=a=b", "--from-file=bin={bin}"], "configmap/c", True),
    ("secret", ["create", "secret", "generic", "s", "--from-literal=k=v"], "secret/s", True),
    ("serviceaccount", ["create", "serviceaccount", "sa"], "serviceaccount/sa", True),
    ("service", ["create", "service", "clusterip", "s", "--tcp=80:8080"], "service/s", True),
    ("service-nodeport", ["create", "service", "nodeport", "np", "--tcp=80:8080"], "service/np", True),
    ("job", ["create", "job", "j", "--image=busybox", "--", "sh", "-c", "echo hi"], "job/j", True),
    ("cronjob", ["create", "cronjob", "cj", "--image=busybox", "--schedule=*/1 * * * *"], "cronjob/cj", True),
    ("role", ["create", "role", "r", "--verb=get,list", "--resource=pods"], "role/r", True),
    ("rolebinding", ["create", "rolebinding", "rb", "--role=r", "--serviceaccount={ns}:sa"], "rolebinding/rb", True),
    ("clusterrole", ["create", "clusterrole", "cr-{ns}", "--verb=get", "--resource=nodes"], "clusterrole/cr-{ns}", True),
    ("ingress", ["create", "ingress", "ing", "--rule=foo.com/bar=svc1:8080,tls=my-cert"], "ingress/ing", True),
    ("pdb", ["create", "poddisruptionbudget", "pdb", "--selector=app=web", "--min-available=1"], "pdb/pdb", True),
    ("quota", ["create", "quota", "q", "--hard=cpu=1,memory=1G,pods=2"], "resourcequota/q", True),
    ("run", ["run", "p", "--image=nginx", "--labels=a=b", "--env=X=1", "--port=80"], "pod/p", False),
    ("expose", ["expose", "deployment", "web", "--port=80", "--name=web2"], "service/web2", False),
]


@pytest.mark.parametrize(("args", "obj", "protobuf"), [c[1:] for c in CREATES], ids=[c[0] for c in CREATES])
def test_kubectl_create_over_protobuf_stores_what_json_does(cluster: Any, kubectl: Any, tmp_path: Path,
                                                           args: list[str], obj: str, protobuf: bool) -> None:
    """kubectl sends the object as protobuf into one namespace; the same object, written by kubectl as JSON
    (--dry-run=client -o json), goes through the JSON path into another. The decoded body equals that JSON,
    and the stored objects are equal."""
    (tmp_path / "bin").write_bytes(bytes(range(256)))  # binaryData: bytes that are not UTF-8
    a, b = cluster.namespace("pb"), cluster.namespace("js")
    if args[0] == "expose":
        for ns in (a, b):
            kubectl("-n", ns, "create", "deployment", "web", "--image=nginx")
    argv = [x.format(ns=a, bin=tmp_path / "bin") for x in args]
    p = kubectl("-n", a, "-v=9", *argv)
    bodies = [x for x in sent_bodies(p.stderr) if x]
    as_json = json.loads(kubectl("-n", a, *with_dry_run(argv)).stdout)
    if protobuf:
        assert len(bodies) == 1 and isinstance(bodies[0], bytes) and bodies[0][:4] == b"k8s\x00", bodies
        assert decode_body(bodies[0]) == as_json
    else:
        assert bodies and all(isinstance(x, dict) for x in bodies)  # kubectl 1.32 sends these as JSON
    kubectl("-n", b, "create", "-f", "-", stdin=json.dumps(as_json).replace(a, b))
    got_a = json.loads(kubectl("-n", a, "get", obj.format(ns=a), "-o", "json").stdout)
    got_b = json.loads(kubectl("-n", b, "get", obj.format(ns=b), "-o", "json").stdout)
    assert normalized(got_a, a) == normalized(got_b, b)


def test_create_token_and_use_it(cluster: Any, kubectl: Any) -> None:
    ns = cluster.namespace("pbt")
    tok = kubectl("-n", ns, "create", "token", "default", "--duration=10m", "--audience=minimesh-test").stdout.strip()
    claims = jwt.decode(tok, options={"verify_signature": False})
    assert claims["aud"] == ["minimesh-test"] and claims["exp"] - claims["iat"] == 600
    assert claims["sub"] == f"system:serviceaccount:{ns}:default"
    # a token for the API server's own audience logs in: `auth whoami` (SelfSubjectReview over protobuf)
    tok = kubectl("-n", ns, "create", "token", "default").stdout.strip()
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    cfg["users"][0]["user"]["token"] = tok
    kc = cluster.dir / f"kubeconfig-{ns}"
    kc.write_text(yaml.safe_dump(cfg))
    who = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=kc).stdout)
    assert who["status"]["userInfo"]["username"] == claims["sub"]


def test_auth_can_i(cluster: Any, kubectl: Any) -> None:
    ns = cluster.namespace("pbc")
    p = kubectl("-n", ns, "auth", "can-i", "get", "pods", "-v=9")
    assert p.stdout.strip() == "yes"
    (body,) = [x for x in sent_bodies(p.stderr) if x]
    assert decode_body(body)["spec"] == {"resourceAttributes": {"namespace": ns, "verb": "get", "resource": "pods"}}


def test_drain_deletes_pods_with_protobuf_delete_options(cluster: Any, kubectl: Any) -> None:
    """`drain --disable-eviction` deletes pods through the typed client: DeleteOptions travel as protobuf.
    (Evictions are sent as JSON.)"""
    ns = cluster.namespace("pbd")
    node = f"node-{ns}"
    kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))
    try:
        kubectl("-n", ns, "create", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}))
        p = kubectl("drain", node, "--disable-eviction", "--force", "--grace-period=0", "--timeout=30s", "-v=9")
        sent = [decode_body(x) for x in sent_bodies(p.stderr) if isinstance(x, bytes) and x]
        assert sent == [{"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}]
        assert kubectl("-n", ns, "get", "pod", "p", ok=False).returncode != 0
    finally:
        kubectl("delete", "node", node, ok=False)
