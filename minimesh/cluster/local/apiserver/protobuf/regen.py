"""Regenerate the Kubernetes protobuf schema the API server decodes request bodies with.

    python -m minimesh.cluster.local.apiserver.protobuf.regen                  # proto/*.proto -> gen/*_pb2.py
    python -m minimesh.cluster.local.apiserver.protobuf.regen --from-kubectl   # kubectl -> proto/, then gen/

`--from-kubectl [PATH]` renders proto/*.proto from the file descriptors compiled into a kubectl binary (Go's
protobuf registry keeps every generated.proto as a gzipped FileDescriptorProto). Those are exactly the
schemas that kubectl encodes with, and unlike the published generated.proto text they still carry the
gogoproto `nullable` option, which says whether a field is a Go value (always encoded) or a pointer
(encoded only when set); decoding zero values right needs that. The second step compiles proto/ with
grpc_tools.protoc and makes the imports of the generated modules relative to this package.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from minimesh.cluster.local.apiserver.protobuf import catalog

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE / "proto"
GEN_DIR = HERE / "gen"
GOGO_SOURCE = "github.com/gogo/protobuf/gogoproto/gogo.proto"
GOGO_FILE = "gogoproto.proto"
NULLABLE = 65001  # (gogoproto.nullable)
GZIP_MAGIC = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"

LICENSE = """\
/*
Copyright The Kubernetes Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/
"""

GOGO_PROTO = """\
// The one gogoproto option the minimesh API server reads: same package, name and number as in
// github.com/gogo/protobuf/gogoproto/gogo.proto (BSD-3-Clause), which declares many more.
syntax = "proto2";

package gogoproto;

import "google/protobuf/descriptor.proto";

extend google.protobuf.FieldOptions {
  // false: a Go value field, always encoded; unset (true): a pointer, encoded only when set.
  optional bool nullable = 65001;
}
"""

SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}
F = descriptor_pb2.FieldDescriptorProto


# ---- step 1: kubectl binary -> FileDescriptorProtos -------------------------------------------------
def kubectl_descriptors(binary: Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Every k8s.io file descriptor a Go binary registers (gzipped FileDescriptorProto blobs)."""
    data = binary.read_bytes()
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for m in re.finditer(re.escape(GZIP_MAGIC), data):
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[m.start(): m.start() + (4 << 20)])
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except (zlib.error, DecodeError):  # gzip magic by chance, or not a descriptor: keep scanning
            continue
        if fd.name.startswith("k8s.io/") and fd.name.endswith(".proto") and fd.package:
            found[fd.name] = fd
    return found


def closure(fds: dict[str, descriptor_pb2.FileDescriptorProto], roots: list[str]) -> list[str]:
    """roots and everything they import, dependencies first."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order or name == GOGO_SOURCE:
            return
        if name not in fds:
            chain = " <- ".join((name, *reversed(path)))
            raise SystemExit(f"the kubectl binary has no descriptor for {chain}")
        for dep in fds[name].dependency:
            visit(dep, (*path, name))
        order.append(name)

    for r in roots:
        visit(r, ())
    return order


def _nullable_false(options: descriptor_pb2.FieldOptions) -> bool:
    """True when the field carries (gogoproto.nullable) = false (an extension unknown to descriptor_pb2)."""
    raw, i = options.SerializeToString(), 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            b = raw[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(raw):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
            if number == NULLABLE:
                return value == 0
        elif wire == 2:
            size = varint()  # read before adding: varint() advances i itself
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire} in field options")
    return False


# ---- step 2: FileDescriptorProto -> .proto text -------------------------------------------------------
def _type(f: descriptor_pb2.FieldDescriptorProto) -> str:
    return SCALARS.get(f.type) or f.type_name


def render(fd: descriptor_pb2.FileDescriptorProto, minor: str) -> str:
    """The .proto text of one descriptor (no comments: descriptors carry none)."""
    nullable_used = any(_nullable_false(f.options) for m in fd.message_type for f in m.field)
    lines = [
        LICENSE,
        f"// {fd.name} of Kubernetes {minor}, rendered by ../regen.py from the",
        f"// file descriptor compiled into kubectl {minor}. Changes from the original: no comments (descriptors",
        "// carry none), a flat file name and imports to match, and of the gogoproto options only `nullable`.",
        "",
        'syntax = "proto2";',
        "",
        f"package {fd.package};",
        "",
    ]
    for dep in fd.dependency:
        if dep == GOGO_SOURCE:
            if nullable_used:
                lines.append(f'import "{GOGO_FILE}";')
        else:
            lines.append(f'import "{catalog.module_name(dep)}.proto";')
    lines.append("")
    if fd.options.HasField("go_package"):
        lines += [f'option go_package = "{fd.options.go_package}";', ""]
    for msg in fd.message_type:
        if msg.enum_type or msg.oneof_decl or msg.extension:
            raise SystemExit(f"{fd.name}: {msg.name} uses enums/oneofs/extensions, which this renderer does not know")
        maps = {f".{fd.package}.{msg.name}.{n.name}": n for n in msg.nested_type if n.options.map_entry}
        if len(maps) != len(msg.nested_type):
            raise SystemExit(f"{fd.name}: {msg.name} has nested messages that are not map entries")
        lines.append(f"message {msg.name} {{")
        for i, f in enumerate(msg.field):
            if f.label == F.LABEL_REQUIRED or f.HasField("default_value"):
                raise SystemExit(f"{fd.name}: {msg.name}.{f.name} is required or has a default")
            opts = " [(gogoproto.nullable) = false]" if _nullable_false(f.options) else ""
            entry = maps.get(f.type_name)
            if entry is not None:
                key, value = entry.field[0], entry.field[1]
                decl = f"map<{_type(key)}, {_type(value)}> {f.name} = {f.number}{opts};"
            else:
                label = "repeated" if f.label == F.LABEL_REPEATED else "optional"
                decl = f"{label} {_type(f)} {f.name} = {f.number}{opts};"
            lines += (["", f"  {decl}"] if i else [f"  {decl}"])
        lines += ["}", ""]
    return "\n".join(lines)


def kubectl_minor(binary: Path) -> str:
    out = subprocess.run([str(binary), "version", "--client", "-o", "json"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    major, minor = json.loads(out)["clientVersion"]["gitVersion"].lstrip("v").split(".")[:2]
    return f"v{major}.{minor}"


def write_protos(binary: Path, proto_dir: Path = PROTO_DIR) -> list[str]:
    fds = kubectl_descriptors(binary)
    names = closure(fds, catalog.sources())
    minor = kubectl_minor(binary)
    if proto_dir.exists():
        shutil.rmtree(proto_dir)
    proto_dir.mkdir(parents=True)
    (proto_dir / GOGO_FILE).write_text(GOGO_PROTO)
    for name in names:
        (proto_dir / f"{catalog.module_name(name)}.proto").write_text(render(fds[name], minor))
    return names


# ---- step 3: .proto -> *_pb2.py ------------------------------------------------------------------------
def compile_protos(proto_dir: Path = PROTO_DIR, gen_dir: Path = GEN_DIR) -> list[Path]:
    from grpc_tools import protoc

    include = resources.files("grpc_tools") / "_proto"
    protos = sorted(p.name for p in proto_dir.glob("*.proto"))
    modules = {Path(p).stem for p in protos}
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={tmp}", *protos])
        if rc != 0:
            raise SystemExit(f"protoc failed ({rc}) on {proto_dir}")
        if gen_dir.exists():
            shutil.rmtree(gen_dir)
        gen_dir.mkdir(parents=True)
        (gen_dir / "__init__.py").write_text('"""Generated by ../regen.py from ../proto/*.proto; do not edit."""\n')
        written = []
        for src in sorted(Path(tmp).glob("*_pb2.py")):
            text = src.read_text()
            # protoc writes `import api_core_v1_pb2 as ...`: make those imports relative to this package.
            text = re.sub(r"^import (\w+)_pb2 as ", lambda m: (f"from . import {m.group(1)}_pb2 as " if m.group(1) in modules
                                                                else m.group(0)), text, flags=re.M)
            dst = gen_dir / src.name
            dst.write_text("# ruff: noqa\n" + text)
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-kubectl", nargs="?", const="", metavar="PATH",
                    help="first render proto/*.proto from this kubectl binary (default: kubectl on PATH)")
    args = ap.parse_args(argv)
    if args.from_kubectl is not None:
        found = args.from_kubectl or shutil.which("kubectl")
        if not found:
            raise SystemExit("no kubectl found: pass its path to --from-kubectl")
        binary = Path(found).resolve()
        names = write_protos(binary)
        print(f"rendered {len(names)} files from {binary} into {PROTO_DIR}")
    written = compile_protos()
    print(f"compiled {len(written)} modules into {GEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
