"""A restart loses nothing: objects, allocations and resourceVersions come back from SQLite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from kubernetes import client, config

_spec = importlib.util.spec_from_file_location("apiserver_conftest", Path(__file__).with_name("conftest.py"))
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
sys.modules["apiserver_conftest"] = harness  # dataclasses look their module up
_spec.loader.exec_module(harness)


def test_restart_keeps_objects_and_versions(tmp_path: Path) -> None:
    pki = harness.make_pki(tmp_path)
    (tmp_path / "pods").mkdir()
    srv = harness.ServerThread(pki, tmp_path / "etcd.sqlite3", tmp_path / "pods")
    try:
        srv.start()
        kc = harness.write_kubeconfig(tmp_path / "kubeconfig", srv.url, pki.ca_cert, pki.token)
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kc)))
        core.create_namespace({"metadata": {"name": "keep"}})
        cm = core.create_namespaced_config_map("keep", {"metadata": {"name": "c"}, "data": {"k": "v"}})
        svc = core.create_namespaced_service("keep", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
        rv_before = int(core.list_namespaced_config_map("keep").metadata.resource_version)
        srv.stop()
        srv.start()  # same port, same database
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kc)))
        again = core.read_namespaced_config_map("c", "keep")
        assert again.metadata.uid == cm.metadata.uid and again.data == {"k": "v"}
        assert again.metadata.resource_version == cm.metadata.resource_version
        assert core.read_namespaced_service("s", "keep").spec.cluster_ip == svc.spec.cluster_ip
        assert int(core.list_namespaced_config_map("keep").metadata.resource_version) == rv_before
        newer = core.create_namespaced_config_map("keep", {"metadata": {"name": "d"}})
        assert int(newer.metadata.resource_version) > rv_before
        # a watch from the last version seen before the restart still works
        from kubernetes import watch

        evs = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
            core.list_namespaced_config_map, "keep", resource_version=str(rv_before), timeout_seconds=1)]
        assert evs == [("ADDED", "d")]
    finally:
        srv.close()
