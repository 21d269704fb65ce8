"""What the API server serves (legacy discovery: /api, /apis, /apis/<group>/<version>), as the namespace
controller and the garbage collector need it: every resource, its kind, scope and verbs, at the
group's preferred version. Custom resources appear as soon as their CRD is served."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from minimesh.k8s.aclient import ApiError, AsyncKube, resource_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        return resource_path(self.api_version, self.plural, namespace if self.namespaced else None, name)

    def can(self, *verbs: str) -> bool:
        return all(v in self.verbs for v in verbs)


def _group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def parse_resource_list(group: str, version: str, body: dict[str, Any]) -> list[Resource]:
    out = []
    for r in body.get("resources") or []:
        name = r.get("name", "")
        if not name or "/" in name:
            continue  # subresources
        out.append(Resource(group, version, name, r.get("kind", ""), bool(r.get("namespaced")),
                            frozenset(r.get("verbs") or [])))
    return out


@dataclass
class Discovered:
    resources: list[Resource]
    failed_groups: dict[str, str]  # group version → error

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        """The RESTMapper lookup for owner references (any served version of the group)."""
        group = _group_of(api_version)
        for r in self.resources:
            if r.group == group and r.kind == kind:
                return r
        return None


class Discovery:
    def __init__(self, kube: AsyncKube):
        self.kube = kube
        self._last: Discovered | None = None
        self._lock = asyncio.Lock()


    async def refresh(self) -> Discovered:
        async with self._lock:
            resources: list[Resource] = []
            failed: dict[str, str] = {}
            try:
                core = await self.kube.get("/api/v1")
                resources += parse_resource_list("", "v1", core)
            except (ApiError, OSError) as e:
                failed["v1"] = str(e)
            try:
                groups = (await self.kube.get("/apis")).get("groups") or []
            except (ApiError, OSError) as e:
                groups = []
                failed["/apis"] = str(e)

            async def one(group: dict[str, Any]) -> tuple[str, list[Resource] | str]:
                gv = (group.get("preferredVersion") or {}).get("groupVersion") or \
                    ((group.get("versions") or [{}])[0]).get("groupVersion", "")
                try:
                    body = await self.kube.get(f"/apis/{gv}")
                except (ApiError, OSError) as e:
                    return gv, str(e)
                g, _, v = gv.partition("/")
                return gv, parse_resource_list(g, v, body)

            for gv, result in await asyncio.gather(*(one(g) for g in groups)):
                if isinstance(result, str):
                    failed[gv] = result
                else:
                    resources += result
            self._last = Discovered(resources, failed)
            return self._last

    async def get(self) -> Discovered:
        return self._last if self._last is not None else await self.refresh()
