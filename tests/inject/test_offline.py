"""Offline injection (`minimesh inject -f`, like `istioctl kube-inject`) of whole YAML files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from minimesh.inject import names
from minimesh.inject.offline import OfflineError, inject_text

CRONJOB = """
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {sidecar.minimesh.io/inject: "false"}
        spec:
          restartPolicy: Never
          containers: [{name: report, image: busybox, command: [date]}]
"""
JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  template:
    metadata:
      annotations: {sidecar.minimesh.io/nativeSidecar: "true"}
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: busybox}]
"""


def test_deployments_in_a_file_are_injected_and_other_objects_pass_through() -> None:
    text = (Path(__file__).resolve().parents[2] / "minimesh" / "manifests" / "bookinfo.yaml").read_text()
    docs = list(yaml.safe_load_all(inject_text(text)))
    originals = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == [d["kind"] for d in originals]
    for before, after in zip(originals, docs, strict=True):
        if before["kind"] != "Deployment":
            assert after == before
            continue
        spec = after["spec"]["template"]["spec"]
        assert [c["name"] for c in spec["containers"]][-1] == names.PROXY_CONTAINER
        labels = after["spec"]["template"]["metadata"]["labels"]
        assert labels["service.minimesh.io/canonical-name"] == before["metadata"]["labels"]["app"]
        # bookinfo mounts the source tree itself: reused, not added again
        assert [v["name"] for v in spec["volumes"]].count("minimesh-source") == 1
        assert names.SOURCE_VOLUME not in [v["name"] for v in spec["volumes"]]


def test_opted_out_cronjob_is_unchanged_with_a_note_and_native_job_is_injected() -> None:
    notes: list[str] = []
    out = list(yaml.safe_load_all(inject_text(CRONJOB + "---" + JOB, warn=notes.append)))
    assert out[0] == yaml.safe_load(CRONJOB)
    assert notes == ["===> Skipping injection because CronJob 'report': the pod opted out with sidecar.minimesh.io/inject"]
    job_spec = out[1]["spec"]["template"]["spec"]
    assert [c["name"] for c in job_spec["initContainers"]] == [names.INIT_CONTAINER, names.PROXY_CONTAINER]
    assert job_spec["initContainers"][1]["restartPolicy"] == "Always"
    assert out[1]["spec"]["template"]["metadata"]["labels"]["service.minimesh.io/canonical-name"] == "migrate"


def test_lists_host_network_and_injected_input() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "a", "image": "a"}]}}
    host = {**pod, "metadata": {"name": "h"}, "spec": {**pod["spec"], "hostNetwork": True}}
    notes: list[str] = []
    (lst,) = yaml.safe_load_all(inject_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [pod, host]}),
                                            warn=notes.append))
    assert [c["name"] for c in lst["items"][0]["spec"]["containers"]] == ["a", names.PROXY_CONTAINER]
    assert lst["items"][1] == host and "hostNetwork" in notes[0]
    again = inject_text(yaml.safe_dump(lst), warn=notes.append)
    assert yaml.safe_load(again) == lst and "already has" in notes[-2] and "hostNetwork" in notes[-1]


@pytest.mark.parametrize(("text", "match"), [
    ("kind: [", r"f.yaml: not valid YAML"),
    ("- 1\n", r"f.yaml: document 1 is a list"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n",
     r"document 1: Deployment 'd': spec.template is missing"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {traffic.sidecar.minimesh.io/excludeInboundPorts: x}}\n"
     "spec: {containers: [{name: a, image: a}]}\n", r"document 1: Pod 'p': annotation traffic.sidecar.minimesh.io/"),
])
def test_errors_name_the_file_and_document(text: str, match: str) -> None:
    with pytest.raises(OfflineError, match=match):
        inject_text(text, "f.yaml")


def test_command_line(tmp_path: Path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text(CRONJOB + "---" + JOB)
    res = subprocess.run([sys.executable, "-m", "minimesh.inject.offline", "-f", str(f)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Skipping injection because CronJob 'report'" in res.stderr
    assert len(list(yaml.safe_load_all(res.stdout))) == 2
    res = subprocess.run([sys.executable, "-m", "minimesh.inject.offline", "-f", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "nope.yaml: No such file or directory" in res.stderr
