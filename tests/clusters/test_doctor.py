"""`minimesh doctor`: the verdicts (pure) and one real run as root that leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from minimesh import doctor
from minimesh.doctor import Check


def kubectl_json(major: str, minor: str, git: str) -> str:
    return json.dumps({"clientVersion": {"major": major, "minor": minor, "gitVersion": git}})


def test_kubectl_verdicts() -> None:
    assert doctor.kubectl_check(kubectl_json("1", "32", "v1.32.4")) == Check("kubectl", True, "v1.32.4")
    assert doctor.kubectl_check(kubectl_json("1", "33+", "v1.33.1-eks")).ok
    skew = doctor.kubectl_check(kubectl_json("1", "29", "v1.29.0"))
    assert not skew.ok and not skew.required and "skew" in skew.detail
    missing = doctor.kubectl_check(None)
    assert not missing.ok and missing.required and "install kubectl" in missing.fix
    assert not doctor.kubectl_check("not json").ok


def test_tool_and_version_verdicts() -> None:
    have = {"tcpdump": "/usr/bin/tcpdump"}.get
    assert doctor.tool_check("tcpdump", have, fix="apt") == Check("tcpdump", True, "/usr/bin/tcpdump")
    wrk = doctor.tool_check("wrk", have, fix="apt-get install wrk", required=False, purpose="benchmarks")
    assert (wrk.ok, wrk.required, wrk.fix) == (False, False, "apt-get install wrk") and "benchmarks" in wrk.detail
    assert doctor.min_version_check("kind", "kind v0.27.0 go1.23", (0, 27, 0), "fix").ok
    old = doctor.min_version_check("kind", "kind v0.24.0", (0, 27, 0), "install kind v0.27.0")
    assert not old.ok and "older than v0.27.0" in old.detail
    assert doctor.min_version_check("kind", None, (0, 27, 0), "f").detail == "not found"


def test_redirect_verdicts() -> None:
    good = doctor.parse_probe_output("redirected=yes\noriginal_dst=127.0.0.1:18080\nuid_bypass=yes\n")
    checks = doctor.redirect_checks(good, "iptables-nft")
    assert [c.ok for c in checks] == [True, True, True]
    bad = doctor.parse_probe_output("redirected=no\nredirect_error=[Errno 111] Connection refused\nuid_bypass=no\nuid_error=x")
    checks = {c.name: c for c in doctor.redirect_checks(bad, "iptables-nft")}
    assert not checks["iptables nat REDIRECT"].ok and "Connection refused" in checks["iptables nat REDIRECT"].detail
    assert not checks["SO_ORIGINAL_DST"].ok and "want 127.0.0.1:18080" in checks["SO_ORIGINAL_DST"].detail
    assert checks["iptables owner match"].skipped  # nothing was redirected, so a refusal proves nothing
    owner = doctor.redirect_checks({"redirected": "yes", "original_dst": "127.0.0.1:18080", "uid_bypass": "no",
                                    "uid_error": "connected, so it was redirected"}, "iptables")[2]
    assert not owner.ok and "xt_owner" in owner.fix and "redirected too" in owner.detail
    wrong = doctor.redirect_checks({"redirected": "yes", "original_dst": "127.0.0.1:15001", "uid_bypass": "yes"}, "iptables")
    assert not wrong[1].ok and "got 127.0.0.1:15001" in wrong[1].detail


def test_rendering_and_exit_code() -> None:
    checks = [
        Check("Linux", True, "Linux 6.1"),
        Check("tcpdump", False, "not found", "sudo apt-get install tcpdump"),
        Check("wrk", False, "not found", "sudo apt-get install wrk", required=False),
        Check("overlayfs", False, "not tried (needs root)", skipped=True),
    ]
    text = doctor.render_text(checks)
    lines = text.splitlines()
    assert lines[0].startswith("✔ Linux")
    assert lines[1].startswith("✘ tcpdump") and lines[2] == "    → sudo apt-get install tcpdump"
    assert lines[3].startswith("✘ wrk (optional)")
    assert any(ln.startswith("- overlayfs") for ln in lines)
    assert lines[-1] == "1 required check(s) failed: tcpdump (1 optional missing: wrk)"
    assert doctor.exit_code(checks) == 1
    assert doctor.exit_code(checks[2:]) == 0  # optional and skipped failures do not fail the run
    data = json.loads(doctor.to_json("local", checks))
    assert data["provider"] == "local" and data["ok"] is False
    assert data["checks"][1] == {"name": "tcpdump", "ok": False, "detail": "not found",
                                 "fix": "sudo apt-get install tcpdump", "required": True, "skipped": False}
    assert doctor.render_text([Check("a", True, "x")]).splitlines()[-1] == "ready"


def test_kind_plan_without_docker_or_kind_fails_with_hints(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    checks = {c.name: c for c in doctor.run_checks("kind", which=lambda name: None)}
    assert not checks["docker engine"].ok and "start Docker" in checks["docker engine"].fix
    assert not checks["kind"].ok and "install kind" in checks["kind"].fix
    assert "root" not in checks and "overlayfs" not in checks  # local-only checks are not run for kind


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _nat_rules() -> str:
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout


@pytest.mark.cluster
def test_real_run_as_root_passes_and_cleans_up(need_root) -> None:  # type: ignore[no-untyped-def]
    before_ns, before_nat = _netns(), _nat_rules()
    tmp = Path(tempfile.gettempdir())
    before_tmp = set(tmp.glob("mmdoc-overlay-*"))
    proc = subprocess.run([sys.executable, "-m", "minimesh", "doctor", "--provider", "local", "--json"],
                          capture_output=True, text=True, timeout=120)
    data = json.loads(proc.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    for name in ("network namespaces", "veth pairs", "iptables nat REDIRECT", "SO_ORIGINAL_DST",
                 "iptables owner match", "overlayfs", "iptables backend", "root"):
        assert checks[name]["ok"], (name, checks[name])
    assert checks["SO_ORIGINAL_DST"]["detail"] == "original destination 127.0.0.1:18080"
    assert proc.returncode == (0 if data["ok"] else 1)
    # nothing left behind: no probe namespace, host nat rules untouched, no overlay temp dirs
    assert not {n for n in _netns() - before_ns if n.startswith("mmdoc-")}
    assert _nat_rules().count("\n-A") == before_nat.count("\n-A")
    assert set(tmp.glob("mmdoc-overlay-*")) == before_tmp
    text = subprocess.run([sys.executable, "-m", "minimesh", "doctor"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MINIMESH_PROVIDER": "local"})
    assert "✔ SO_ORIGINAL_DST" in text.stdout and text.stdout.rstrip().splitlines()[0] == "minimesh doctor (provider: local)"


def test_real_run_as_an_ordinary_user_fails_on_root_and_skips_kernel_probes(need_root) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "HOME": "/tmp"}
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
         sys.executable, "-m", "minimesh", "doctor", "--provider", "local", "--json"],
        capture_output=True, text=True, timeout=120, env=env, cwd="/",
    )
    if proc.returncode not in (0, 1) or not proc.stdout.startswith("{"):
        pytest.skip(f"nobody cannot run this checkout's interpreter: {proc.stderr.strip()[-200:]}")
    data = json.loads(proc.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert proc.returncode == 1 and data["ok"] is False
    assert checks["root"]["ok"] is False and "sudo" in checks["root"]["fix"]
    assert checks["SO_ORIGINAL_DST"]["skipped"] and checks["overlayfs"]["skipped"]
