"""Which iptables to drive: nf_tables or legacy, detected like kind's node entrypoint.

Both kernels' backends can hold rules at the same time and both are evaluated, so the init container
must write into the one the rest of the node (kube-proxy, CNI) already uses. kind's entrypoint (after
kubernetes-sigs/iptables-wrappers) counts the rules that `iptables-legacy-save`/`ip6tables-legacy-save`
and `iptables-nft-save`/`ip6tables-nft-save` print and picks the side with more. On a tie (e.g. a fresh
pod network namespace: 0 and 0) we pick nft, the default of current distributions (kind's script would
pick legacy there; the brief asks for nft).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

BackendName = Literal["nft", "legacy"]
CHOICES = ("auto", "nft", "legacy")


@dataclass(frozen=True)
class Backend:
    name: BackendName

    @property
    def restore(self) -> str:
        return f"iptables-{self.name}-restore"

    @property
    def save(self) -> str:
        return f"iptables-{self.name}-save"

    @property
    def save6(self) -> str:
        return f"ip6tables-{self.name}-save"


def count_rules(save_output: str) -> int:
    """Rules in iptables-save output (`grep '^-'`, as kind counts them)."""
    return sum(1 for line in save_output.splitlines() if line.startswith("-"))


def choose(legacy_rules: int, nft_rules: int) -> BackendName:
    """The backend with more rules; a tie goes to nft."""
    return "legacy" if legacy_rules > nft_rules else "nft"


Runner = Callable[[list[str]], str]


def _run_quiet(argv: list[str]) -> str:
    """stdout of a save command, or "" when it is missing or fails (kind: `|| true`, `2>/dev/null`)."""
    if shutil.which(argv[0]) is None:
        return ""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def detect(run: Runner = _run_quiet) -> tuple[Backend, dict[str, int]]:
    """Detect the backend in the current network namespace; also return the counts (for the log)."""
    counts = {
        name: sum(count_rules(run([cmd])) for cmd in (Backend(name).save, Backend(name).save6))
        for name in ("legacy", "nft")
    }
    return Backend(choose(counts["legacy"], counts["nft"])), counts


def resolve(choice: str, run: Runner = _run_quiet) -> tuple[Backend, str]:
    """The backend for `--iptables-backend` (auto|nft|legacy) and a sentence saying why."""
    if choice not in CHOICES:
        raise ValueError(f"--iptables-backend: {choice!r} is not one of {', '.join(CHOICES)}")
    if choice != "auto":
        return Backend(choice), f"iptables backend {choice} (chosen with --iptables-backend)"  # type: ignore[arg-type]
    backend, counts = detect(run)
    return backend, (
        f"iptables backend {backend.name} (detected: {counts['legacy']} legacy rules, {counts['nft']} nft rules;"
        " more wins, a tie goes to nft)"
    )
