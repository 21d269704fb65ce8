"""`minimesh doctor`: can this machine run the labs on the chosen provider?

Each check is one line: ✔ what was found, or ✘ what is wrong and what to do. Kernel features are tried
for real, not guessed from version numbers: a throwaway network namespace gets a veth pair and an
iptables nat REDIRECT rule with an owner match, and a connection through it must report its original
destination with SO_ORIGINAL_DST (and a connection from uid 1337 must not be redirected); overlayfs is
mounted in a private mount namespace. Everything created is removed, even on failure.

The verdicts (parsing tool output, version rules, rendering, the exit code) are pure functions; the
probes around them only run commands.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from minimesh import paths

PROXY_UID = 1337
KUBERNETES_MINOR = 32  # the labs target Kubernetes 1.32; kubectl supports one minor version either way
REDIRECT_FROM, REDIRECT_TO = 18080, 15001


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True
    skipped: bool = False

    @property
    def failed_required(self) -> bool:
        return not self.ok and self.required and not self.skipped


Which = Callable[[str], str | None]


# ---- pure verdicts ---------------------------------------------------------------------------------------
def parse_kubectl_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from `kubectl version --client -o json`."""
    try:
        client = json.loads(text)["clientVersion"]
        return int(client["major"]), int("".join(ch for ch in client["minor"] if ch.isdigit()))
    except (ValueError, KeyError, TypeError):
        return None


def kubectl_check(version_json: str | None) -> Check:
    if version_json is None:
        return Check("kubectl", False, "not found", "install kubectl v1.31-v1.33: https://kubernetes.io/docs/tasks/tools/")
    v = parse_kubectl_version(version_json)
    if v is None:
        return Check("kubectl", False, "cannot read `kubectl version --client -o json`", "reinstall kubectl")
    try:
        text = str(json.loads(version_json)["clientVersion"].get("gitVersion") or f"v{v[0]}.{v[1]}")
    except (ValueError, KeyError, AttributeError):
        text = f"v{v[0]}.{v[1]}"
    if v[0] != 1 or abs(v[1] - KUBERNETES_MINOR) > 1:
        return Check(
            "kubectl", False, f"{text}, outside the supported skew of Kubernetes 1.{KUBERNETES_MINOR}",
            "install kubectl v1.31-v1.33", required=False,
        )
    return Check("kubectl", True, text)


def tool_check(name: str, which: Which, *, fix: str, required: bool = True, purpose: str = "") -> Check:
    path = which(name)
    if path:
        return Check(name, True, path + (f" ({purpose})" if purpose else ""), required=required)
    return Check(name, False, "not found" + (f" (needed for {purpose})" if purpose else ""), fix, required=required)


def min_version_check(name: str, output: str | None, minimum: tuple[int, int, int], fix: str) -> Check:
    from minimesh.cluster.kind import parse_version, version_text

    if output is None:
        return Check(name, False, "not found", fix)
    v = parse_version(output)
    if v is None:
        return Check(name, False, f"cannot read the version from {output.strip()[:60]!r}", fix)
    if v < minimum:
        return Check(name, False, f"{version_text(v)} is older than {version_text(minimum)}", fix)
    return Check(name, True, version_text(v))


def parse_probe_output(text: str) -> dict[str, str]:
    """`key=value` lines printed by the in-namespace probe."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def redirect_checks(probe: dict[str, str], iptables: str) -> list[Check]:
    """Verdicts on the REDIRECT/owner/SO_ORIGINAL_DST probe's findings."""
    want = f"127.0.0.1:{REDIRECT_FROM}"
    got = probe.get("original_dst", "")
    redirected = probe.get("redirected") == "yes"
    checks = [
        Check(
            "iptables nat REDIRECT", redirected,
            f"{iptables}: connection to {want} arrived on :{REDIRECT_TO}" if redirected
            else f"{iptables}: connection to {want} was not redirected ({probe.get('redirect_error', 'no answer')})",
            "load the nat modules (modprobe iptable_nat nf_nat; for nft: nft_chain_nat) or use a kernel with netfilter NAT",
        ),
        Check(
            "SO_ORIGINAL_DST", got == want,
            f"original destination {got}" if got == want else f"want {want}, got {got or probe.get('origdst_error', 'nothing')}",
            "the kernel must support conntrack NAT lookups (nf_conntrack); the proxy's outbound listener needs it",
        ),
    ]
    bypass = probe.get("uid_bypass")
    if not redirected:  # a refused connection proves nothing when nothing is redirected at all
        checks.append(Check("iptables owner match", False, "not tried: the redirect itself failed", skipped=True))
        return checks
    checks.append(
        Check(
            "iptables owner match", bypass == "yes",
            f"uid {PROXY_UID} bypasses the redirect" if bypass == "yes"
            else f"uid {PROXY_UID} was redirected too ({probe.get('uid_error', bypass or 'no answer')})",
            "load xt_owner (modprobe xt_owner); the sidecar's own traffic must escape capture",
        )
    )
    return checks


def _label(c: Check) -> str:
    return c.name + ("" if c.required or c.ok or c.skipped else " (optional)")


def render_text(checks: Sequence[Check]) -> str:
    """One line per check (✔ ok, ✘ failed, - not tried) with the fix under each failure, then a verdict."""
    width = max((len(_label(c)) for c in checks), default=10) + 2
    lines = []
    for c in checks:
        mark = "-" if c.skipped else ("✔" if c.ok else "✘")
        line = f"{mark} {_label(c):<{width}}{c.detail}"
        if not c.ok and not c.skipped and c.fix:
            line += f"\n    → {c.fix}"
        lines.append(line)
    failed = [c for c in checks if c.failed_required]
    optional = [c for c in checks if not c.ok and not c.required and not c.skipped]
    verdict = "ready" if not failed else f"{len(failed)} required check(s) failed: {', '.join(c.name for c in failed)}"
    if optional:
        verdict += f" ({len(optional)} optional missing: {', '.join(c.name for c in optional)})"
    lines.append(verdict)
    return "\n".join(lines)


def to_json(provider: str, checks: Sequence[Check]) -> str:
    return json.dumps(
        {"provider": provider, "ok": exit_code(checks) == 0, "checks": [asdict(c) for c in checks]}, indent=2
    )


def exit_code(checks: Iterable[Check]) -> int:
    return 1 if any(c.failed_required for c in checks) else 0


# ---- probes (I/O) ---------------------------------------------------------------------------------------
def _run(argv: Sequence[str], *, timeout: float = 20, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, cwd="/")


def _output(argv: Sequence[str]) -> str | None:
    """stdout (or stderr) of a version command, None when the tool is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = _run(argv)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (proc.stdout or proc.stderr) if proc.returncode == 0 else None


_PROBE = r"""
import os, socket, struct, sys
FROM, TO, UID = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", TO)); srv.listen(4); srv.settimeout(3)
try:
    c = socket.create_connection(("127.0.0.1", FROM), timeout=3)
    conn, _ = srv.accept()
    print("redirected=yes")
    try:
        raw = conn.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST -> struct sockaddr_in
        print(f"original_dst={socket.inet_ntoa(raw[4:8])}:{struct.unpack('!H', raw[2:4])[0]}")
    except OSError as e:
        print(f"origdst_error={e}")
    conn.close(); c.close()
except OSError as e:
    print(f"redirected=no\nredirect_error={e}")
sys.stdout.flush()
pid = os.fork()
if pid == 0:  # as the proxy's uid the same connection must NOT be redirected (nothing listens on FROM)
    os.setgroups([]); os.setresgid(UID, UID, UID); os.setresuid(UID, UID, UID)
    try:
        socket.create_connection(("127.0.0.1", FROM), timeout=3).close()
        print("uid_bypass=no\nuid_error=connected, so it was redirected"); code = 0
    except ConnectionRefusedError:
        print("uid_bypass=yes"); code = 0
    except OSError as e:
        print(f"uid_bypass=no\nuid_error={e}"); code = 0
    sys.stdout.flush(); os._exit(code)
os.waitpid(pid, 0)
"""


def pick_iptables(which: Which = shutil.which) -> str:
    # A fresh pod namespace has no rules on either side, where minimesh.init picks nft.
    return "iptables-nft" if which("iptables-nft") else "iptables"


def probe_network(python: str = sys.executable) -> list[Check]:
    """netns, veth, nat REDIRECT + owner match + SO_ORIGINAL_DST, for real in a throwaway namespace."""
    ns = f"mmdoc-{os.getpid()}-{secrets.token_hex(3)}"
    iptables = pick_iptables()
    checks: list[Check] = []
    proc = _run(["ip", "netns", "add", ns])
    if proc.returncode != 0:
        return [Check("network namespaces", False, proc.stderr.strip() or "ip netns add failed",
                      "needs root and CONFIG_NET_NS; inside a container run it --privileged")]
    try:
        checks.append(Check("network namespaces", True, f"created and removed {ns}"))
        proc = _run(["ip", "-n", ns, "link", "add", "mmdoc0", "type", "veth", "peer", "name", "mmdoc1"])
        checks.append(
            Check("veth pairs", True, "created a veth pair") if proc.returncode == 0
            else Check("veth pairs", False, proc.stderr.strip(), "load the veth module (modprobe veth)")
        )
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        rule = ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(REDIRECT_FROM),
                "-m", "owner", "!", "--uid-owner", str(PROXY_UID), "-j", "REDIRECT", "--to-ports", str(REDIRECT_TO)]
        proc = _run(["ip", "netns", "exec", ns, iptables, *rule])
        if proc.returncode != 0:
            checks.append(Check("iptables nat REDIRECT", False, f"{iptables}: {proc.stderr.strip()}",
                                "load iptable_nat/nft_chain_nat, xt_owner and xt_REDIRECT"))
            return checks
        proc = _run(["ip", "netns", "exec", ns, python, "-c", _PROBE, str(REDIRECT_FROM), str(REDIRECT_TO), str(PROXY_UID)])
        checks.extend(redirect_checks(parse_probe_output(proc.stdout + proc.stderr), iptables))
        return checks
    finally:
        _run(["ip", "netns", "del", ns])


def probe_overlayfs() -> Check:
    """Mount an overlay in a private mount namespace (gone with the process), write through it."""
    tmp = Path(tempfile.mkdtemp(prefix="mmdoc-overlay-"))
    try:
        for d in ("lower", "upper", "work", "merged"):
            (tmp / d).mkdir()
        script = (
            f"mount -t overlay overlay -o lowerdir={tmp}/lower,upperdir={tmp}/upper,workdir={tmp}/work {tmp}/merged"
            f" && echo ok > {tmp}/merged/probe && cat {tmp}/upper/probe"
        )
        proc = _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
        if proc.returncode == 0 and proc.stdout.strip() == "ok":
            return Check("overlayfs", True, "mounted an overlay and wrote through it")
        return Check("overlayfs", False, proc.stderr.strip() or "mount failed", "load the overlay module (modprobe overlay)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def probe_iptables_backend() -> Check:
    try:
        from minimesh.init import backend
    except ImportError as e:
        return Check("iptables backend", False, f"cannot detect: {e}", required=False)
    chosen, counts = backend.detect()
    return Check(
        "iptables backend", True,
        f"the host uses {chosen.name} ({counts.get('legacy', 0)} legacy rules, {counts.get('nft', 0)} nft rules)",
    )


def interpreter() -> str:
    venv = paths.venv_python()
    return str(venv) if venv.exists() else sys.executable


def probe_uid_1337(python: str) -> Check:
    """Can the proxy's uid run the interpreter and import minimesh and its dependencies?"""
    code = "import aiohttp, httptools, yaml, minimesh; print(minimesh.__file__)"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(paths.SOURCE_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups", "--", python, "-c", code]
    try:
        proc = _run(argv, env=env)
    except OSError as e:
        return Check(f"uid {PROXY_UID} runs the venv", False, str(e), "install util-linux (setpriv)")
    if proc.returncode == 0:
        return Check(f"uid {PROXY_UID} runs the venv", True, f"{python} imports minimesh from {proc.stdout.strip()}")
    last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return Check(
        f"uid {PROXY_UID} runs the venv", False, last,
        f"make the checkout and its .venv readable by others (chmod o+rx on every directory of {paths.SOURCE_ROOT}); "
        "keep the checkout outside /root",
    )


def docker_check() -> Check:
    from minimesh.cluster.docker_images import docker_client
    from minimesh.cluster.provider import ProviderError

    try:
        client = docker_client()
        version = client.version().get("Version", "?")
    except ProviderError as e:
        return Check("docker engine", False, "not reachable", str(e))
    return Check("docker engine", True, f"reachable (Docker {version})")


# ---- the plan per provider ---------------------------------------------------------------------------------
def run_checks(provider: str, which: Which = shutil.which) -> list[Check]:
    from minimesh.cluster.kind import INSTALL_HINTS, KIND_MIN_VERSION
    from minimesh.cluster.minikube import MINIKUBE_MIN_VERSION

    checks: list[Check] = []
    linux = platform.system() == "Linux"
    checks.append(Check("Linux", linux, f"{platform.system()} {platform.release()}",
                        "the local cluster needs Linux; use --provider kind or minikube elsewhere",
                        required=provider == "local"))
    py = sys.version_info
    checks.append(Check("Python", py >= (3, 11), f"{platform.python_version()} ({sys.executable})",
                        "use Python 3.11 or newer (make setup builds .venv from /usr/bin/python3)"))
    kubectl_out = _output(["kubectl", "version", "--client", "-o", "json"]) if which("kubectl") else None
    checks.append(kubectl_check(kubectl_out))

    if provider == "local":
        root = linux and os.geteuid() == 0
        checks.append(Check("root", root, "running as root" if root else f"running as uid {os.geteuid()}",
                            "run as root (sudo): the local cluster creates namespaces, veths and iptables rules"))
        for tool, purpose in (("ip", "namespaces and links"), ("iptables", "traffic capture"),
                              ("setpriv", f"running as uid {PROXY_UID}"), ("unshare", "mount namespaces"),
                              ("tcpdump", "stage 6 captures")):
            checks.append(tool_check(tool, which, fix="sudo make setup (apt-get install iproute2 iptables util-linux tcpdump)", purpose=purpose))
        for tool in ("nginx", "busybox"):
            checks.append(tool_check(tool, which, fix=f"sudo apt-get install {tool}", purpose="stage 1's nginx and busybox pods"))
        for tool in ("haproxy", "wrk"):
            checks.append(tool_check(tool, which, fix=f"sudo apt-get install {tool}", required=False, purpose="benchmarks"))
        can_probe = root and all(which(t) for t in ("ip", "iptables", "unshare"))
        if can_probe:
            checks.extend(probe_network())
            checks.append(probe_overlayfs())
            checks.append(probe_iptables_backend())
        else:
            why = "needs root" if not root else "needs ip, iptables and unshare"
            for name in ("network namespaces", "veth pairs", "iptables nat REDIRECT", "SO_ORIGINAL_DST",
                         "iptables owner match", "overlayfs"):
                checks.append(Check(name, False, f"not tried ({why})", skipped=True))
        if root and which("setpriv"):
            checks.append(probe_uid_1337(interpreter()))
        else:
            checks.append(Check(f"uid {PROXY_UID} runs the venv", False, "not tried (needs root and setpriv)", skipped=True))
    else:
        checks.append(tool_check("docker", which, fix=INSTALL_HINTS["docker"], purpose="the docker CLI"))
        checks.append(docker_check())
        if provider == "kind":
            out = _output(["kind", "version"])
            checks.append(min_version_check("kind", out, KIND_MIN_VERSION, INSTALL_HINTS["kind"]))
        else:
            out = _output(["minikube", "version", "--short"])
            checks.append(min_version_check("minikube", out, MINIKUBE_MIN_VERSION, INSTALL_HINTS["minikube"]))
    return checks
