"""Fixtures for the graders: the cluster, its APIs, and commands run inside pods.

Graders run through `minimesh lab grade NN` (or a notebook's `grade("NN")`), which sets
MINIMESH_GRADING=1; the project's own test run skips collecting them (they need the trainee's cluster).
Everything goes through the Kubernetes API, so the same graders run on local, kind and minikube.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from minimesh.lab import grading

if not os.environ.get("MINIMESH_GRADING"):
    collect_ignore_glob = ["test_lab*.py"]


@pytest.fixture(scope="session")
def cluster() -> Any:
    from minimesh.cluster import provider

    try:
        return provider.current()
    except provider.ProviderError as e:
        raise grading.GradeFailure("a cluster selected by MINIMESH_PROVIDER/MINIMESH_CLUSTER", str(e),
                                   "minimesh cluster up") from None


@pytest.fixture(scope="session")
def api_client(cluster: Any) -> Iterator[Any]:
    from kubernetes import client

    name = f"{cluster.provider} cluster {cluster.name!r}"
    try:
        api = cluster.api_client()
        client.VersionApi(api).get_code(_request_timeout=10)
    except Exception as e:  # any failure here means "no cluster to grade"
        raise grading.GradeFailure(f"the {name} to answer", f"{type(e).__name__}: {e}",
                                   f"minimesh cluster up --name {cluster.name}  (then minimesh cluster status)") from None
    yield api
    api.close()


@pytest.fixture(scope="session")
def core(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(api_client)


@pytest.fixture(scope="session")
def batch(api_client: Any) -> Any:
    from kubernetes import client

    return client.BatchV1Api(api_client)


@pytest.fixture(scope="session")
def exec_in(core: Any) -> Callable[..., Any]:
    """exec_in(pod, argv, container=None, namespace="default") -> ExecResult."""
    return functools.partial(grading.exec_in, core)


@pytest.fixture(scope="session")
def http_from(core: Any) -> Callable[..., grading.HttpResult]:
    """http_from(pod, url, namespace="default", ...) -> HttpResult (curl run inside the pod)."""
    return functools.partial(grading.http_from, core)


@pytest.fixture(scope="session")
def sleep_pod(core: Any, apps: Any) -> str:
    """The name of a ready `sleep` pod (the in-cluster client from stage 0)."""
    if not apps.list_namespaced_deployment("default", label_selector="app=sleep").items:
        grading.missing("the sleep deployment (stage 0's client)", "minimesh apply -f minimesh/manifests/sleep.yaml")
    return grading.pod_named_by(core, "app=sleep", timeout=60)
