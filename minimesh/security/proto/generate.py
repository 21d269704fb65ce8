"""Regenerate ca_pb2.py / ca_pb2_grpc.py from ca.proto (needs grpcio-tools, the `dev` extra):

    .venv/bin/python -m minimesh.security.proto.generate

The generated files are committed, so running the mesh needs no code generation.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
HEADER = "# ruff: noqa\n"  # generated code: not ours to lint


def main() -> int:
    from grpc_tools import protoc

    rel = HERE.relative_to(ROOT) / "ca.proto"
    code = protoc.main(["protoc", f"-I{ROOT}", f"-I{Path(protoc.__file__).parent / '_proto'}",
                        f"--python_out={ROOT}", f"--grpc_python_out={ROOT}", str(rel)])
    if code:
        return int(code)
    for name in ("ca_pb2.py", "ca_pb2_grpc.py"):
        p = HERE / name
        text = p.read_text()
        if not text.startswith(HEADER):
            p.write_text(HEADER + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
