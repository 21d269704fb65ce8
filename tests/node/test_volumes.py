"""Volume contents and the kubelet's atomic writer, on a real file system."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from minimesh.cluster.local.node import atomic_writer
from minimesh.cluster.local.node.atomic_writer import FileProjection
from minimesh.cluster.local.node.envvars import PodContext
from minimesh.cluster.local.node.security import ConfigError
from minimesh.cluster.local.node.volumes import MountError, VolumeManager, resolve_host_path, subpath_source

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"a": "1", "b": "2"}},
       "spec": {"serviceAccountName": "sa", "containers": [{"name": "c", "resources": {"limits": {"cpu": "500m"}}}]}}
CTX = PodContext(POD, "10.244.0.3", "198.18.0.2", {"cpu": "2", "memory": "1Gi"})
CMS = {("ns", "cfg"): {"data": {"app.conf": "x=1", "other": "y"}, "binaryData": {"bin": base64.b64encode(b"\x00\x01").decode()}}}
SECRETS = {("ns", "sec"): {"data": {"password": base64.b64encode(b"s3cret").decode()}}}


def test_atomic_writer_swaps_versions(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    assert atomic_writer.write(d, {"a": FileProjection(b"1"), "dir/b": FileProjection(b"2", 0o600)})
    assert (d / "a").read_text() == "1" and (d / "dir/b").read_text() == "2"
    assert os.readlink(d / "a") == "..data/a" and (os.stat(d / "dir/b").st_mode & 0o777) == 0o600
    first = os.readlink(d / "..data")
    assert not atomic_writer.write(d, {"a": FileProjection(b"1"), "dir/b": FileProjection(b"2", 0o600)})  # unchanged
    assert atomic_writer.write(d, {"a": FileProjection(b"changed")})
    assert os.readlink(d / "..data") != first and not (tmp_path / "vol" / first).exists()
    assert (d / "a").read_text() == "changed" and not (d / "dir").exists()
    with pytest.raises(ValueError, match="invalid file path"):
        atomic_writer.write(d, {"../escape": FileProjection(b"x")})


def test_configmap_secret_projected_downward_emptydir(tmp_path: Path) -> None:
    async def token(pod: dict, source: dict) -> str:
        return f"token-for-{pod['metadata']['name']}-{source.get('audience', '')}"

    pod = {**POD, "spec": {**POD["spec"], "volumes": [
        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "app.conf", "path": "conf/app.conf", "mode": 0o600}]}},
        {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
        {"name": "opt", "configMap": {"name": "missing", "optional": True}},
        {"name": "api", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "audience": "mesh"}},
            {"configMap": {"name": "cfg", "items": [{"key": "bin", "path": "ca.bin"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu", "divisor": "1m"}}]}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "src", "hostPath": {"path": "/opt/minimesh/sub", "type": "DirectoryOrCreate"}},
    ]}}
    ctx = PodContext(pod, CTX.pod_ip, CTX.host_ip, CTX.node_allocatable)
    mounts = [{"hostPath": str(tmp_path / "tree"), "containerPath": "/opt/minimesh"}]
    vm = VolumeManager(tmp_path / "pod", mounts, lambda ns, n: CMS.get((ns, n)), lambda ns, n: SECRETS.get((ns, n)), token)
    vols = asyncio.run(vm.setup(ctx))
    assert Path(vols["cfg"].path, "conf/app.conf").read_text() == "x=1" and vols["cfg"].api_data
    assert (os.stat(Path(vols["cfg"].path, "conf/app.conf")).st_mode & 0o777) == 0o600
    assert Path(vols["sec"].path, "password").read_text() == "s3cret"
    assert (os.stat(Path(vols["sec"].path, "password")).st_mode & 0o777) == 0o400
    assert [n for n in os.listdir(vols["opt"].path) if not n.startswith("..")] == []
    assert Path(vols["api"].path, "token").read_text() == "token-for-p-mesh"
    assert Path(vols["api"].path, "ca.bin").read_bytes() == b"\x00\x01"
    assert Path(vols["api"].path, "namespace").read_text() == "ns"
    assert Path(vols["info"].path, "labels").read_text() == 'a="1"\nb="2"'
    assert Path(vols["info"].path, "cpu").read_text() == "500"
    assert (os.stat(vols["scratch"].path).st_mode & 0o777) == 0o777 and not vols["scratch"].api_data
    assert vols["src"].path == str(tmp_path / "tree" / "sub") and Path(vols["src"].path).is_dir()

    CMS[("ns", "cfg")]["data"]["app.conf"] = "x=2"  # an update reaches the same directory atomically
    try:
        asyncio.run(vm.setup(ctx))
        assert Path(vols["cfg"].path, "conf/app.conf").read_text() == "x=2"
    finally:
        CMS[("ns", "cfg")]["data"]["app.conf"] = "x=1"


def test_mount_errors_name_the_volume(tmp_path: Path) -> None:
    async def token(pod: dict, source: dict) -> str:
        return "t"

    for vol, msg in [
        ({"name": "v", "configMap": {"name": "nope"}}, 'MountVolume.SetUp failed for volume "v" : configmap "nope" not found'),
        ({"name": "v", "secret": {"secretName": "nope"}}, 'secret "nope" not found'),
        ({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}}, "non-existent configmap key: zz"),
        ({"name": "v", "hostPath": {"path": str(tmp_path / "absent"), "type": "Directory"}}, "is not a directory"),
        ({"name": "v", "persistentVolumeClaim": {"claimName": "x"}}, "not supported by the local cluster"),
    ]:
        pod = {**POD, "spec": {**POD["spec"], "volumes": [vol]}}
        vm = VolumeManager(tmp_path / "pod", [], lambda ns, n: CMS.get((ns, n)), lambda ns, n: SECRETS.get((ns, n)), token)
        with pytest.raises(MountError, match=msg.replace("(", r"\(")):
            asyncio.run(vm.setup(PodContext(pod, "", "", {})))


def test_subpath_and_host_path_mapping(tmp_path: Path) -> None:
    vol = tmp_path / "v"
    vol.mkdir()
    assert subpath_source(str(vol), "a/b", create=True) == str(vol / "a/b")
    (vol / "link").symlink_to("/etc")
    with pytest.raises(ConfigError, match="outside the volume"):
        subpath_source(str(vol), "link", create=False)
    with pytest.raises(ConfigError, match=r"without '\.\.'"):
        subpath_source(str(vol), "../x", create=False)
    mounts = [{"hostPath": "/work/tree", "containerPath": "/opt/minimesh"}]
    assert resolve_host_path("/opt/minimesh", mounts) == "/work/tree"
    assert resolve_host_path("/opt/minimesh/x/y", mounts) == "/work/tree/x/y"
    assert resolve_host_path("/opt/minimesh-other", mounts) == "/opt/minimesh-other"
