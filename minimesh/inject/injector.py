"""One pod in, a decision out: skip (with a reason) or the JSON Patch that injects it. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from minimesh.inject import patch, policy, template
from minimesh.inject.model import Obj, check_pod
from minimesh.inject.template import InjectorConfig


@dataclass(frozen=True)
class Decision:
    patch: list[patch.Op]  # empty when skipped
    skip: str | None = None  # a policy.SKIP_REASONS value


def decide(pod: object, namespace: str, namespace_labels: Mapping[str, str] | None,
           config: InjectorConfig | None = None, workload: str | None = None) -> Decision:
    """Raises InjectionError when the pod is malformed or asks for something impossible.

    `workload` names the pod's owner when the pod itself cannot (a template injected offline).
    """
    checked: Obj = check_pod(pod)
    reason = policy.skip_reason(checked, namespace, namespace_labels)
    if reason is not None:
        return Decision([], reason)
    return Decision(patch.build_patch(checked, template.plan(checked, config, workload)))
