"""A decoded Kubernetes protobuf message -> the JSON dict Go's encoding/json makes of the same Go struct.

That is what the JSON path of the API server receives from kubectl, so both paths store the same object:

- JSON names are the proto field names, except the few listed in JSON_NAMES; structs embedded with
  `json:",inline"` (INLINE) spread their fields into the parent;
- Go value fields (gogoproto `nullable = false`) are always on the wire: a zero scalar there means
  "unset" and is left out (`omitempty`), a struct is always written (`{}`: Go never omits structs, and
  decodes a missing one as its zero value). Pointer fields are on the wire only when set, so whatever
  is there is kept, zero or not (`replicas: 0`);
- empty lists, maps and byte strings are left out; bytes become base64;
- fields without `omitempty` are always written, as Go does: zero scalars as zero, nil pointers, lists
  and maps as null. The OpenAPI definitions (schema.py) tell them: openapi-gen marks exactly those
  `required` (less the rare `+optional` field without `omitempty`, which is left out when zero);
- metav1.Time and MicroTime -> RFC 3339 (null when zero), Duration -> Go's "1h2m3s", Quantity -> its
  string, IntOrString -> int or string, RawExtension and FieldsV1 -> the JSON they hold, ExtraValue and
  Verbs (named Go string slices) -> lists.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from minimesh.cluster.local.apiserver import schema
from minimesh.cluster.local.apiserver.protobuf.gen import gogoproto_pb2

META = "k8s.io.apimachinery.pkg.apis.meta.v1"
TIME = f"{META}.Time"
MICRO_TIME = f"{META}.MicroTime"
DURATION = f"{META}.Duration"
FIELDS_V1 = f"{META}.FieldsV1"
QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"
STRING_LISTS = frozenset({
    "k8s.io.api.authentication.v1.ExtraValue",
    "k8s.io.api.authorization.v1.ExtraValue",
    f"{META}.Verbs",
})

# Go structs embedded with `json:",inline"` (go-to-protobuf gives them a field of their own).
INLINE = frozenset({
    ("k8s.io.api.core.v1.ConfigMapEnvSource", "localObjectReference"),
    ("k8s.io.api.core.v1.ConfigMapKeySelector", "localObjectReference"),
    ("k8s.io.api.core.v1.ConfigMapProjection", "localObjectReference"),
    ("k8s.io.api.core.v1.ConfigMapVolumeSource", "localObjectReference"),
    ("k8s.io.api.core.v1.SecretEnvSource", "localObjectReference"),
    ("k8s.io.api.core.v1.SecretKeySelector", "localObjectReference"),
    ("k8s.io.api.core.v1.SecretProjection", "localObjectReference"),
    ("k8s.io.api.core.v1.EphemeralContainer", "ephemeralContainerCommon"),
    ("k8s.io.api.core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
    ("k8s.io.api.core.v1.Probe", "handler"),
    ("k8s.io.api.core.v1.Volume", "volumeSource"),
    ("k8s.io.api.admissionregistration.v1.NamedRuleWithOperations", "ruleWithOperations"),
    ("k8s.io.api.admissionregistration.v1.RuleWithOperations", "rule"),
    ("k8s.io.api.networking.v1.IngressRule", "ingressRuleValue"),
})
# Proto names go-to-protobuf derived from Go field names where the json tag says otherwise.
JSON_NAMES = {
    ("k8s.io.api.admissionregistration.v1.MutatingWebhookConfiguration", "Webhooks"): "webhooks",
    ("k8s.io.api.admissionregistration.v1.ValidatingWebhookConfiguration", "Webhooks"): "webhooks",
    ("k8s.io.api.admissionregistration.v1.Validation", "Expression"): "expression",
    ("k8s.io.api.admissionregistration.v1.Variable", "Name"): "name",
    ("k8s.io.api.admissionregistration.v1.Variable", "Expression"): "expression",
    ("k8s.io.api.authentication.v1.BoundObjectReference", "uID"): "uid",
    ("k8s.io.api.networking.v1.IngressClassParametersReference", "aPIGroup"): "apiGroup",
}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_GO_ZERO_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
_ZERO = {FieldDescriptor.TYPE_STRING: "", FieldDescriptor.TYPE_BOOL: False}


class BodyError(ValueError):
    """The message cannot be turned into JSON without losing or inventing something; says where."""


@dataclass(frozen=True)
class _Field:
    fd: FieldDescriptor
    name: str  # the JSON name (for an inline field: its proto name, used in error paths only)
    inline: bool
    value: bool  # a Go value field (always encoded); else a pointer, slice or map
    required: bool  # no `omitempty`: Go writes it even when zero or nil
    map_value: FieldDescriptor | None
    message: bool


@dataclass(frozen=True)
class _Plan:
    fields: dict[int, _Field]  # by field number
    always: tuple[_Field, ...]  # written even when not on the wire: required fields and Go structs


_plans: dict[str, _Plan] = {}
_inlined_into: dict[str, str] = {}  # inline-only types (VolumeSource, ProbeHandler, ...) -> their parent


def _definition(desc: Descriptor) -> dict[str, Any]:
    """The OpenAPI definition of a message (k8s.io.api.core.v1.Pod -> io.k8s.api.core.v1.Pod); an inline-only
    type, which has none, borrows its parent's."""
    defs = schema.definitions()
    name = desc.full_name
    while True:
        found = defs.get("io.k8s." + name.removeprefix("k8s.io."))
        if found is not None or name not in _inlined_into:
            return found or {}
        name = _inlined_into[name]


def _plan(desc: Descriptor) -> _Plan:
    plan = _plans.get(desc.full_name)
    if plan is None:
        required = set(_definition(desc).get("required") or ())
        fields = {}
        for fd in desc.fields:
            opts = fd.GetOptions()
            value = opts.HasExtension(gogoproto_pb2.nullable) and not opts.Extensions[gogoproto_pb2.nullable]
            key = (desc.full_name, fd.name)
            mt = fd.message_type
            inline = key in INLINE
            if inline:
                _inlined_into.setdefault(mt.full_name, desc.full_name)
            name = fd.name if inline else JSON_NAMES.get(key, fd.name)
            is_map = mt is not None and mt.GetOptions().map_entry
            fields[fd.number] = _Field(fd, name, inline, value, not inline and name in required,
                                       mt.fields_by_name["value"] if is_map else None,
                                       mt is not None and not is_map and not fd.is_repeated)
        always = tuple(f for f in fields.values() if f.required or (f.message and f.value))
        plan = _plans[desc.full_name] = _Plan(fields, always)
    return plan


def to_json(msg: Message, nested: Callable[[bytes, str], Any], path: str = "") -> dict[str, Any]:
    """The JSON object of msg. `nested(raw, path)` decodes a RawExtension that holds a protobuf object."""
    _check_unknown(msg, path)
    plan = _plan(msg.DESCRIPTOR)
    out: dict[str, Any] = {}
    seen = set()
    for fd, v in msg.ListFields():  # what is on the wire (lists and maps: when not empty)
        f = plan.fields[fd.number]
        seen.add(fd.number)
        _put(out, f, v, nested, path)
    for f in plan.always:
        if f.fd.number in seen:
            continue
        if f.message and f.value:  # Go decodes a missing struct as its zero value, and writes it
            _put(out, f, getattr(msg, f.fd.name), nested, path)
        elif f.map_value is not None or f.fd.is_repeated or not f.value:
            out[f.name] = None  # a nil pointer, slice or map without omitempty
        elif f.fd.type == FieldDescriptor.TYPE_BYTES:
            out[f.name] = ""
        else:
            out[f.name] = f.fd.default_value  # "" / 0 / false
    return out


def _put(out: dict[str, Any], f: _Field, v: Any, nested: Callable[[bytes, str], Any], path: str) -> None:
    name = f.name
    where = f"{path}.{name}" if path else name
    if f.message:
        converted = _message(v, nested, where)
        if f.inline:
            if not isinstance(converted, dict):
                raise BodyError(f"{where}: an inline field must be an object")
            out.update(converted)
        else:
            out[name] = converted
    elif f.map_value is not None:
        out[name] = {k: _value(f.map_value, v[k], nested, f"{where}[{k}]") for k in v}
    elif f.fd.is_repeated:
        out[name] = [_value(f.fd, x, nested, f"{where}[{i}]") for i, x in enumerate(v)]
    elif f.fd.type == FieldDescriptor.TYPE_BYTES:
        if v or f.required:
            out[name] = base64.b64encode(v).decode()
    elif not f.value or f.required or v != _ZERO.get(f.fd.type, 0):
        out[name] = v  # (a Go value field at its zero value means unset: `omitempty` leaves it out)


def _value(fd: FieldDescriptor, v: Any, nested: Callable[[bytes, str], Any], where: str) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(v, nested, where)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(v).decode()
    return v


def _message(m: Message, nested: Callable[[bytes, str], Any], where: str) -> Any:
    kind = m.DESCRIPTOR.full_name
    if kind == TIME:
        _check_unknown(m, where)
        return _time(m, where, micro=False)
    if kind == MICRO_TIME:
        _check_unknown(m, where)
        return _time(m, where, micro=True)
    if kind == QUANTITY:
        _check_unknown(m, where)
        return m.string or "0"  # Go prints the zero Quantity as "0"
    if kind == INT_OR_STRING:
        _check_unknown(m, where)
        if m.type == 1:
            return m.strVal
        if m.type != 0:
            raise BodyError(f"{where}: IntOrString type {m.type} is neither 0 (int) nor 1 (string)")
        return m.intVal
    if kind == DURATION:
        _check_unknown(m, where)
        return go_duration(m.duration)
    if kind == RAW_EXTENSION:
        _check_unknown(m, where)
        return _raw_json(m.raw, nested, where)
    if kind == FIELDS_V1:
        _check_unknown(m, where)
        return _raw_json(m.Raw, None, where)
    if kind in STRING_LISTS:
        _check_unknown(m, where)
        return list(m.items)
    return to_json(m, nested, where)


def _raw_json(raw: bytes, nested: Callable[[bytes, str], Any] | None, where: str) -> Any:
    if not raw:
        return None  # Go marshals a RawExtension with no bytes as null
    if nested is not None and raw.startswith(b"k8s\x00"):
        return nested(raw, where)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BodyError(f"{where}: the embedded object is neither protobuf nor JSON ({e})") from None


def _time(m: Message, where: str, micro: bool) -> str | None:
    """metav1.Time drops the nanoseconds (Go's Unmarshal does), MicroTime keeps microseconds."""
    if m.ByteSize() == 0:
        return None  # Go encodes the zero time as nothing and marshals it to JSON as null
    if not 0 <= m.nanos < 1_000_000_000:
        raise BodyError(f"{where}: nanos {m.nanos} is out of range [0, 1e9)")
    try:
        t = _EPOCH + dt.timedelta(seconds=m.seconds, microseconds=m.nanos // 1000 if micro else 0)
    except OverflowError:
        raise BodyError(f"{where}: {m.seconds} seconds is not a time RFC 3339 can write") from None
    if t == _GO_ZERO_TIME:
        return None
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    return f"{text}.{t.microsecond:06d}Z" if micro else f"{text}Z"


def go_duration(ns: int) -> str:
    """time.Duration.String(): 1h2m3.5s, 1.5ms, 0s."""
    if ns == 0:
        return "0s"
    sign, u = ("-", -ns) if ns < 0 else ("", ns)
    if u < 1_000_000_000:
        for unit, size in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if u < size * 1000:
                return sign + _frac(u, size) + unit
    secs = _frac(u % 60_000_000_000, 1_000_000_000) + "s"
    minutes, hours = (u // 60_000_000_000) % 60, u // 3_600_000_000_000
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def _frac(v: int, unit: int) -> str:
    whole, rest = divmod(v, unit)
    if not rest:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{str(rest).rjust(digits, '0').rstrip('0')}"


def _check_unknown(msg: Message, where: str) -> None:
    """Fields this schema does not know: zero values are what a newer Go client writes for its unset
    value fields (dropping them loses nothing); anything else would be lost, so it is an error."""
    unknown = UnknownFieldSet(msg)
    for i in range(len(unknown)):
        uf = unknown[i]
        if not _zero(uf.wire_type, uf.data):
            raise BodyError(f"{where or 'the object'}: field number {uf.field_number} of {msg.DESCRIPTOR.full_name} "
                            "is not known to this server (Kubernetes v1.32 schema)")


def _zero(wire_type: int, data: Any) -> bool:
    if wire_type == 2:  # length-delimited: empty, or a message whose fields are all zero
        if not data:
            return True
        probe = empty_pb2.Empty()  # parses anything into unknown fields
        try:
            probe.ParseFromString(data)
        except DecodeError:
            return False
        inner = UnknownFieldSet(probe)
        return all(_zero(inner[i].wire_type, inner[i].data) for i in range(len(inner)))
    if wire_type == 3:  # group
        return all(_zero(g.wire_type, g.data) for g in data)
    return data == 0
