"""`minimesh lab open` serves JupyterLab on loopback, rooted at labs/, with a token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from minimesh.cli.lab import free_port


@pytest.mark.slow
def test_open_serves_jupyterlab_on_loopback() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "minimesh", "lab", "open", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "COLUMNS": "300"})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/lab/tree/(\S*)\?token=([0-9a-f]+)", first)
        assert m, first
        assert int(m.group(1)) == port and m.group(2) == "00-setup.ipynb"
        token = m.group(3)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5) as r:
                    listing = json.load(r)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, "jupyter exited early"
                assert time.monotonic() < deadline, "jupyter did not come up"
                time.sleep(0.5)
        assert "00-setup.ipynb" in {c["name"] for c in listing["content"]}, "root dir is labs/"
        with pytest.raises(urllib.error.HTTPError) as e:  # the token is required
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=5)
        assert e.value.code == 403
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=5) as r:
            spec = json.load(r)["kernelspecs"]["python3"]["spec"]
        # jupyter_client runs "python" kernels with the server's own interpreter: the venv's
        assert spec["argv"][0] in ("python", "python3", sys.executable)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
