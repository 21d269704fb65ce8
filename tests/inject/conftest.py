"""Fixtures for the webhook tests: a throwaway CA and serving certificate, and the real webhook process."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minimesh.install import pki

SERVICE_NAME = "minimeshd.mesh-system.svc"


@dataclass
class Tls:
    dir: Path
    ca: Path  # CA certificate (PEM): what the client trusts, the webhook configuration's caBundle
    ca_pair: pki.KeyPair
    cert: Path
    key: Path

    def reissue(self, ca_pair: pki.KeyPair) -> None:
        """Replace the serving files the way a Secret volume update does (write aside, then rename)."""
        pair = pki.new_serving_cert(ca_pair, [SERVICE_NAME, "localhost"], dt.datetime.now(dt.UTC), ips=["127.0.0.1"])
        for path, data in ((self.cert, pair.cert_pem), (self.key, pair.key_pem)):
            tmp = path.with_suffix(".new")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self.ca.write_bytes(ca_pair.cert_pem)
        self.ca_pair = ca_pair


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = pki.new_root_ca(dt.datetime.now(dt.UTC), "throwaway test CA")
    t = Tls(tmp_path, tmp_path / "ca.crt", ca, tmp_path / "tls.crt", tmp_path / "tls.key")
    t.reissue(ca)
    return t


@dataclass
class Webhook:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    def logs(self) -> str:
        return self.log.read_text()


def start_webhook(tls: Tls, *extra: str) -> Webhook:
    log = tls.dir / f"webhook-{time.monotonic_ns()}.log"
    out = open(log, "w")  # noqa: SIM115 - the process writes to it until stopped
    proc = subprocess.Popen(
        [sys.executable, "-m", "minimesh.inject", "--listen", "127.0.0.1", "--port", "0", "--cert", str(tls.cert),
         "--key", str(tls.key), *extra],
        stdout=subprocess.PIPE, stderr=out, text=True,
    )
    out.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT" once the socket is bound
    if not line.startswith("listening on"):
        proc.kill()
        proc.wait()
        raise AssertionError(f"webhook did not start: {line!r}\n{log.read_text()}")
    return Webhook(proc, int(line.rsplit(":", 1)[1]), log)


def stop_webhook(w: Webhook) -> None:
    if w.proc.poll() is None:
        w.proc.terminate()
        try:
            w.proc.wait(10)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
    if w.proc.stdout:
        w.proc.stdout.close()


@pytest.fixture
def webhook(tls: Tls) -> Iterator[Webhook]:
    w = start_webhook(tls, "--no-namespace-check", "--cert-reload-seconds", "0.2")
    try:
        yield w
    finally:
        stop_webhook(w)
