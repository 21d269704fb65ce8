"""A real API server plus the real controller manager and scheduler, on loopback, for integration tests.

The server and the controllers share one event loop in a background thread, as in the control-plane
process. There is no kubelet: tests play its part through the API (see `live_support.FakeKubelet`).
Test modules import the helpers as `mm_controllers_support` (registered here; tests use importlib mode).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location("mm_controllers_support", Path(__file__).with_name("live_support.py"))
assert _spec and _spec.loader
support = importlib.util.module_from_spec(_spec)
sys.modules["mm_controllers_support"] = support
_spec.loader.exec_module(support)
Env, make_pki, node_body, _kubeconfig = support.Env, support.make_pki, support.node_body, support._kubeconfig


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from minimesh.cluster.local.apiserver.server import ApiServer
    from minimesh.cluster.local.controllers import ControllerManager, Options
    from minimesh.cluster.local.scheduler import Scheduler
    from minimesh.k8s.aclient import AsyncKube, Credentials

    d = tmp_path_factory.mktemp("controllers")
    pki = make_pki(d)
    (d / "pods").mkdir()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="control-plane")
    thread.start()
    stop = asyncio.Event()

    async def start() -> tuple[Any, Any, Any, Any, list[asyncio.Task[None]]]:
        server = ApiServer(cert_file=pki["apiserver.crt"], key_file=pki["apiserver.key"], ca_file=pki["ca.crt"],
                           sa_private_key_file=pki["sa.key"], sa_public_key_file=pki["sa.pub"],
                           admin_token=pki["token"], db_path=d / "etcd.sqlite3", pods_dir=d / "pods",
                           listen=[("127.0.0.1", 0)])
        await server.start()
        kube = AsyncKube(Credentials(server=f"https://127.0.0.1:{server.port}", token=str(pki["token"]),
                                     ca_file=str(pki["ca.crt"])), user_agent="controllers-test")
        await kube.create("/api/v1/nodes", node_body())
        manager = ControllerManager(kube, Path(pki["ca.crt"]).read_text(),
                                    Options(job_backoff_base=0.2, job_backoff_max=1.0))
        scheduler = Scheduler(kube, manager.informers)
        tasks = [asyncio.create_task(manager.run(stop)), asyncio.create_task(scheduler.run(stop))]
        return server, kube, manager, scheduler, tasks

    server, kube, manager, scheduler, tasks = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    url = f"https://127.0.0.1:{server.port}"
    kc = _kubeconfig(d / "kubeconfig", url, Path(pki["ca.crt"]), str(pki["token"]))
    e = Env(url, kc, Path(pki["ca.crt"]), str(pki["token"]), loop, manager, scheduler)
    try:
        yield e
    finally:
        async def shutdown() -> None:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await kube.close()
            await server.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


