"""`python -m minimesh.bench.procstat --match REGEX`: CPU time and memory of this pod's processes whose command
line matches REGEX, as one JSON line. `minimesh bench dataplane` runs it in the meter container of a bench pod,
before and after a load run, to charge each sidecar proxy its own CPU and peak RSS.

"This pod's" means: sharing this process's network namespace. On the local cluster every process of the
machine is visible (containers have no PID namespace); on kind/minikube the bench pods set
`shareProcessNamespace: true` so the meter container sees the proxy's processes. Reading another process's
/proc/PID/ns/net needs its uid, so the meter runs as the proxy's (1337).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SELF_MARK = "minimesh.bench.procstat"


def parse_stat(text: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from /proc/PID/stat (fields 14 and 15; the name may hold spaces)."""
    rest = text[text.rindex(")") + 2:].split()  # fields from 3 (state) on
    return int(rest[11]), int(rest[12])


def parse_status(text: str) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB from /proc/PID/status (0 when absent, e.g. a zombie)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in out:
            out[key] = int(value.split()[0])
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # the process exited meanwhile, or is not ours to read
        return None


def scan(pattern: str, proc: Path = Path("/proc")) -> dict[str, Any]:
    """Matching processes in this network namespace, with their CPU seconds and memory, and the totals."""
    regex = re.compile(pattern)
    me = os.getpid()
    my_net = os.readlink(proc / "self" / "ns" / "net")
    tick = os.sysconf("SC_CLK_TCK")
    found: list[dict[str, Any]] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        raw = _read(entry / "cmdline")
        if not raw:
            continue
        cmd = raw.replace("\0", " ").strip()
        if SELF_MARK in cmd or not regex.search(cmd):
            continue
        try:
            if os.readlink(entry / "ns" / "net") != my_net:
                continue
        except OSError:  # another uid's process: not a proxy of this pod
            continue
        stat, status = _read(entry / "stat"), _read(entry / "status")
        if stat is None or status is None:
            continue
        utime, stime = parse_stat(stat)
        mem = parse_status(status)
        found.append({"pid": int(entry.name), "cmd": cmd[:120], "cpu_s": round((utime + stime) / tick, 3),
                      "rss_kb": mem["VmRSS"], "peak_rss_kb": mem["VmHWM"]})
    found.sort(key=lambda p: p["pid"])
    return {"pattern": pattern, "processes": found,
            "cpu_s": round(sum(p["cpu_s"] for p in found), 3),
            "rss_mb": round(sum(p["rss_kb"] for p in found) / 1024, 2),
            "peak_rss_mb": round(sum(p["peak_rss_kb"] for p in found) / 1024, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimesh.bench.procstat", description=__doc__.splitlines()[0])
    ap.add_argument("--match", required=True, help="regular expression searched in each command line")
    args = ap.parse_args(argv)
    result = scan(args.match)
    print(json.dumps(result), flush=True)
    return 0 if result["processes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
