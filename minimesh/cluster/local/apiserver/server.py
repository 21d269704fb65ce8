"""The API server process part: aiohttp over HTTPS, authentication, routing, content negotiation
(JSON, Table, aggregated discovery) and watch streams. Decisions live in rest.py and friends."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import json
import logging
import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from minimesh.cluster.local.apiserver import convert, discovery, listing, openapi, printers
from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.apiserver import patch as P
from minimesh.cluster.local.apiserver.registry import Registry, ResourceType
from minimesh.cluster.local.apiserver.rest import Api, Params, User, decode_body
from minimesh.cluster.local.apiserver.store import Change, Expired, Store
from minimesh.cluster.local.layout import KUBERNETES_VERSION

log = logging.getLogger(__name__)
Obj = dict[str, Any]
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
ADMIN = User("kubernetes-admin", groups=["system:masters", "system:authenticated"])
MAX_BODY = 3 * 1024 * 1024
USER_KEY: Any = web.RequestKey("user", User) if hasattr(web, "RequestKey") else "user"


@dataclass
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str
    watch: bool = False


def _json(obj: Any, status: int = 200, *, content_type: str = "application/json", warnings: list[str] | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status,
                        content_type=content_type.split(";")[0], headers=headers)
    if ";" in content_type:
        resp.headers["Content-Type"] = content_type
    for w in warnings or []:
        resp.headers.add("Warning", '299 - ' + json.dumps(w))
    return resp


def _error(err: E.ApiError) -> web.Response:
    return web.Response(body=err.body(), status=err.code, content_type="application/json", headers=err.headers)


def _accepts(request: web.Request) -> list[tuple[str, dict[str, str]]]:
    out = []
    for part in request.headers.get("Accept", "").split(","):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        params = {}
        for b in bits[1:]:
            if "=" in b:
                k, v = b.split("=", 1)
                params[k.strip()] = v.strip()
        out.append((bits[0], params))
    return out


def _wants_table(request: web.Request) -> str | None:
    for mt, p in _accepts(request):
        if p.get("as") == "Table" and p.get("g") == "meta.k8s.io" and mt == "application/json":
            return p.get("v", "v1")
    return None


def _wants_aggregated(request: web.Request) -> str | None:
    for mt, p in _accepts(request):
        if mt == "application/json" and p.get("as") == "APIGroupDiscoveryList" and p.get("g") == "apidiscovery.k8s.io":
            return p.get("v")
    return None


def _json_acceptable(request: web.Request) -> bool:
    acc = _accepts(request)
    return not acc or any(mt in ("application/json", "*/*", "application/*") for mt, _ in acc)


class ApiServer:
    """The local cluster's Kubernetes API server.

    `ApiServer(layout, pki)` in the control plane; tests may pass files and a listen address instead:
    `ApiServer(cert_file=..., key_file=..., ca_file=..., sa_private_key_file=..., sa_public_key_file=...,
    admin_token=..., db_path=..., listen=[("127.0.0.1", 0)])`.
    """

    def __init__(
        self,
        layout: Any = None,
        pki: Any = None,
        *,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        sa_private_key_file: str | Path | None = None,
        sa_public_key_file: str | Path | None = None,
        admin_token: str | None = None,
        db_path: str | Path | None = None,
        pods_dir: str | Path | None = None,
        listen: list[tuple[str, int]] | None = None,
        bookmark_interval: float = 30.0,
        node_netns: str | None = None,
    ):
        self.layout = layout
        if pki is not None:
            cert_file = cert_file or pki.apiserver_cert
            key_file = key_file or pki.apiserver_key
            ca_file = ca_file or pki.ca_cert
            sa_private_key_file = sa_private_key_file or pki.sa_key
            sa_public_key_file = sa_public_key_file or pki.sa_pub
            admin_token = admin_token or pki.admin_token
        if not (cert_file and key_file and admin_token):
            raise ValueError("ApiServer needs a serving certificate, its key and the admin token (pki or files)")
        self.cert_file, self.key_file, self.ca_file = str(cert_file), str(key_file), str(ca_file) if ca_file else None
        self.sa_private_key_file = str(sa_private_key_file) if sa_private_key_file else None
        self.sa_public_key_file = str(sa_public_key_file) if sa_public_key_file else None
        self.admin_token = admin_token
        if db_path is None and layout is not None:
            db_path = layout.db_path
        self.db_path = db_path
        self.pods_dir = Path(pods_dir) if pods_dir else (layout.pods_dir if layout is not None else None)
        if listen is None:
            if layout is None:
                listen = [("127.0.0.1", 0)]
            else:
                listen = [("127.0.0.1", layout.api_port), (layout.host_ip, layout.api_port)]
        self.listen = listen
        self.node_netns = node_netns or (layout.node_netns if layout is not None else None)
        self.bookmark_interval = bookmark_interval
        self.registry = Registry()
        self.store: Store | None = None
        self.api: Api | None = None
        self.port: int = 0
        self._runner: web.AppRunner | None = None
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        self._openapi_cache: dict[str, tuple[int, Obj, str]] = {}
        self.registry_generation = 0
        self.extensions: list[Any] = []

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.listen[0][0]}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    async def start(self) -> None:
        self.store = Store(self.db_path)
        self.api = Api(self.store, self.registry)
        self._install_extensions()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        ctx = self.ssl_context()
        port = self.listen[0][1]
        for host, p in self.listen:
            site = web.TCPSite(self._runner, host, p or port, ssl_context=ctx, reuse_address=True, backlog=512)
            try:
                await site.start()
            except OSError as e:
                await self.stop()
                raise OSError(e.errno, f"the API server cannot listen on {host}:{p or port}: {e.strerror}") from None
            if not port:
                server = site._server
                port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.port = port

    async def stop(self) -> None:
        if self.store is not None:
            for ws in list(self.store.watchers.values()):
                for w in list(ws):
                    w.close()
        for ext in self.extensions:
            stop = getattr(ext, "stop", None)
            if stop:
                await stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _install_extensions(self) -> None:
        """Phase-2 features hook into the Api: admission plugins, CRDs, tokens (see their modules)."""
        from minimesh.cluster.local.apiserver import extensions

        self.extensions = extensions.install(self)

    def registry_changed(self) -> None:
        self.registry_generation += 1
        self._openapi_cache.clear()

    # ---- authentication ----------------------------------------------------------------------
    def authenticate(self, request: web.Request) -> User | None:
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        token = auth[7:].strip()
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return ADMIN
        authn = getattr(self, "token_authenticator", None)
        if authn is not None:
            return authn(token)
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            if request.path not in PUBLIC_PATHS:
                user = self.authenticate(request)
                if user is None:
                    raise E.unauthorized()
                request[USER_KEY] = user
            return await handler(request)
        except E.ApiError as err:
            return _error(err)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug: answer like the real server instead of dropping the connection
            log.exception("internal error serving %s %s", request.method, request.path)
            return _error(E.internal(f"{type(exc).__name__}: {exc}"))

    # ---- routing -----------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return web.Response(text="ok")
        if path == "/version":
            return _json(version_info())
        if path == "/":
            return _json({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v2", "/openapi/v3",
                                    "/readyz", "/version", *[f"/apis/{g}" for g in self.registry.group_versions() if g]]})
        if path.startswith("/openapi"):
            return self._openapi(request, path)
        parts = [p for p in path.split("/") if p]
        if parts[0] == "api":
            if len(parts) == 1:
                return self._discovery_root(request, legacy=True)
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return self._discovery_root(request, legacy=False)
            if len(parts) == 2:
                doc = discovery.api_group(self.registry, parts[1])
                if doc is None:
                    raise E.not_found("", "", "")
                return _json(doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not self.registry.in_group_version(group, version):
            raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not rest:
            if request.method != "GET":
                raise E.method_not_allowed()
            return _json(discovery.resource_list(self.registry, group, version))
        target = self._parse_target(group, version, rest)
        return await self._resource(request, target)

    def _parse_target(self, group: str, version: str, rest: list[str]) -> Target:
        watch = False
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        not_found = E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not rest:
            raise not_found
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            rt = self.registry.find(group, version, rest[2])
            if rt is not None and rt.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = self.registry.find(group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise not_found
        if rt.namespaced and namespace is None and len(rest) > 1:
            raise not_found
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and rt.sub(sub) is None:
            raise not_found
        return Target(rt, namespace, name, sub, watch)

    def _discovery_root(self, request: web.Request, legacy: bool) -> web.Response:
        agg = _wants_aggregated(request)
        if agg in ("v2", "v2beta1"):
            ct = discovery.AGGREGATED_V2 if agg == "v2" else discovery.AGGREGATED_V2BETA1
            doc = discovery.aggregated(self.registry, legacy, f"apidiscovery.k8s.io/{agg}")
            return _json(doc, content_type=ct, headers={"Vary": "Accept"})
        if legacy:
            host = self.listen[0][0]
            return _json(discovery.api_versions(f"{host}:{self.port}"), headers={"Vary": "Accept"})
        return _json(discovery.group_list(self.registry), headers={"Vary": "Accept"})

    def _openapi(self, request: web.Request, path: str) -> web.StreamResponse:
        if path == "/openapi/v2":
            if not _json_acceptable(request):
                raise E.not_acceptable("only application/json is served for /openapi/v2")
            return self._cached_doc("v2", lambda: openapi.v2_document(self.registry))
        if path == "/openapi/v3":
            paths = {}
            for p in openapi.v3_paths(self.registry):
                _, _, digest = self._cached_pair(p)
                paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={digest}"}
            return _json({"paths": paths})
        if path.startswith("/openapi/v3/"):
            rel = path[len("/openapi/v3/"):]
            bits = rel.split("/")
            if bits[0] == "api" and len(bits) == 2:
                group, version = "", bits[1]
            elif bits[0] == "apis" and len(bits) == 3:
                group, version = bits[1], bits[2]
            else:
                raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
            if not self.registry.in_group_version(group, version):
                raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
            _, doc, digest = self._cached_pair(rel)
            headers = {"Etag": f'"{digest}"'}
            if request.query.get("hash") == digest:
                headers["Cache-Control"] = "public, immutable"
            return _json(doc, headers=headers)
        raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})

    def _cached_pair(self, rel: str) -> tuple[int, Obj, str]:
        hit = self._openapi_cache.get(rel)
        if hit and hit[0] == self.registry_generation:
            return hit
        bits = rel.split("/")
        group, version = ("", bits[1]) if bits[0] == "api" else (bits[1], bits[2])
        doc = openapi.v3_document(self.registry, group, version) or {}
        entry = (self.registry_generation, doc, openapi.digest(doc))
        self._openapi_cache[rel] = entry
        return entry

    def _cached_doc(self, key: str, build: Any) -> web.Response:
        hit = self._openapi_cache.get(key)
        if not hit or hit[0] != self.registry_generation:
            doc = build()
            hit = (self.registry_generation, doc, openapi.digest(doc))
            self._openapi_cache[key] = hit
        return _json(hit[1], headers={"Etag": f'"{hit[2]}"'})

    # ---- resources ---------------------------------------------------------------------------
    def _user(self, request: web.Request) -> User:
        return request.get(USER_KEY) or ADMIN

    def present(self, rt: ResourceType, obj: Obj) -> Obj:
        return convert.to_version(obj, rt.group, rt.version, rt.kind)

    def _storage_rt(self, rt: ResourceType) -> ResourceType:
        if rt.storage_group is not None and rt.storage_group != rt.group:
            core = next(t for t in self.registry.by_key(rt.key) if t.group == rt.storage_group)
            return core
        return rt

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        ct = request.headers.get("Content-Type", "application/json")
        if "protobuf" in ct:  # kubectl's typed clients; the schema is imported on the first such body
            from minimesh.cluster.local.apiserver import protobuf

            if protobuf.is_protobuf(ct):
                return protobuf.decode_body(raw)
        if "protobuf" in ct or "cbor" in ct:
            raise E.unsupported_media_type(ct, ["application/json", "application/yaml"])
        return decode_body(raw, ct)

    async def _resource(self, request: web.Request, t: Target) -> web.StreamResponse:
        api = self.api
        assert api is not None
        rt, method, q = t.rt, request.method, request.query
        user = self._user(request)
        special = getattr(self, "subresource_handlers", {}).get((rt.group, rt.plural, t.subresource))
        if special is not None:
            return await special(request, t)
        if not rt.stored:
            handler = getattr(self, "virtual_handlers", {}).get((rt.group, rt.plural))
            if handler is None or method != "POST":
                raise E.method_not_allowed()
            return await handler(request, t)
        srt = self._storage_rt(rt)
        table_v = _wants_table(request)
        if t.name is None:
            flt = listing.make_filter(rt.group, rt.kind, t.namespace, q.get("labelSelector"), q.get("fieldSelector"),
                                      self._extra_fields(rt))
            if method == "GET":
                if "list" not in rt.verbs:
                    raise E.method_not_allowed()
                if t.watch or q.get("watch") in ("true", "1"):
                    return await self._watch(request, rt, srt, t.namespace, flt, table_v)
                items, meta = api.list(srt, t.namespace, flt, q)
                items = [self.present(rt, o) for o in items]
                if table_v:
                    return _json(self._table(rt, items, request, meta, table_v))
                return _json({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items})
            if method == "POST":
                if "create" not in rt.verbs:
                    raise E.method_not_allowed()
                if rt.namespaced and t.namespace is None:
                    raise E.method_not_allowed()
                body = await self._body(request)
                body = self._to_storage_form(rt, srt, body)
                obj, warnings = await api.create(srt, t.namespace, body, Params.from_query(q), user)
                return _json(self.present(rt, obj), 201, warnings=warnings)
            if method == "DELETE":
                if "deletecollection" not in rt.verbs:
                    raise E.method_not_allowed()
                opts = await self._delete_options(request)
                res = await api.delete_collection(srt, t.namespace, flt, opts, Params.from_query(q), user)
                res["items"] = [self.present(rt, o) for o in res["items"]]
                res["kind"], res["apiVersion"] = rt.list_kind, rt.api_version
                return _json(res)
            raise E.method_not_allowed()
        name = t.name
        params = Params.from_query(q) if method in ("POST", "PUT", "PATCH", "DELETE") else Params()
        if t.subresource == "scale":
            return await self._scale(request, rt, t, params, user)
        if method == "GET":
            if t.subresource not in ("", "status"):
                raise E.method_not_allowed()
            obj = self.present(rt, api.get_obj(srt, t.namespace, name))
            if table_v:
                return _json(self._table(rt, [obj], request, {"resourceVersion": obj["metadata"].get("resourceVersion", "")}, table_v))
            return _json(obj)
        if method == "PUT":
            if "update" not in rt.verbs and not t.subresource:
                raise E.method_not_allowed()
            body = self._to_storage_form(rt, srt, await self._body(request))
            obj, warnings = await api.update(srt, t.namespace, name, body, params, user, subresource=t.subresource)
            return _json(self.present(rt, obj), warnings=warnings)
        if method == "PATCH":
            if "patch" not in rt.verbs:
                raise E.method_not_allowed()
            raw = await request.read()
            ct = request.headers.get("Content-Type", "")
            if srt is not rt:
                obj, warnings, code = await self._patch_converted(rt, srt, t, raw, ct, params, user)
            else:
                obj, warnings, code = await api.patch(rt, t.namespace, name, raw, ct, params, user, subresource=t.subresource)
            return _json(self.present(rt, obj), code, warnings=warnings)
        if method == "DELETE":
            if "delete" not in rt.verbs or t.subresource:
                raise E.method_not_allowed()
            opts = await self._delete_options(request)
            obj, code = await api.delete(srt, t.namespace, name, opts, params, user)
            return _json(obj if obj.get("kind") == "Status" else self.present(rt, obj), code)
        raise E.method_not_allowed()

    def _to_storage_form(self, rt: ResourceType, srt: ResourceType, body: Any) -> Any:
        if srt is rt or not isinstance(body, dict):
            return body
        return convert.to_storage(body, rt.group, srt.api_version)

    async def _patch_converted(self, rt: ResourceType, srt: ResourceType, t: Target, raw: bytes, ct: str,
                               params: Params, user: User) -> tuple[Obj, list[str], int]:
        api = self.api
        assert api is not None and t.name
        old = api.get_obj(srt, t.namespace, t.name)
        body = decode_body(raw, "yaml" if P.APPLY_PATCH in ct else "json")
        try:
            new = api.apply_patch(rt, self.present(rt, old), body, ct)
        except P.PatchFormatError as e:
            raise E.bad_request(str(e)) from None
        except P.PatchError as e:
            raise E.ApiError(422, "Invalid", str(e)) from None
        obj, warnings = await api.update(srt, t.namespace, t.name, convert.to_storage(new, rt.group, srt.api_version),
                                         params, user, old=old)
        return obj, warnings, 200

    async def _scale(self, request: web.Request, rt: ResourceType, t: Target, params: Params, user: User) -> web.Response:
        api = self.api
        assert api is not None and t.name
        if request.method == "GET":
            return _json(api.scale_of(rt, api.get_obj(rt, t.namespace, t.name)))
        if request.method == "PUT":
            body = await self._body(request)
            return _json(await api.update_scale(rt, t.namespace, t.name, body, params, user))
        if request.method == "PATCH":
            raw = await request.read()
            ct = request.headers.get("Content-Type", "").split(";")[0]
            current = api.scale_of(rt, api.get_obj(rt, t.namespace, t.name))
            body = decode_body(raw, "yaml" if ct == P.APPLY_PATCH else "json")
            try:
                if ct == P.JSON_PATCH:
                    new = P.json_patch(current, body)
                elif ct in (P.MERGE_PATCH, P.STRATEGIC_PATCH, P.APPLY_PATCH):
                    new = P.merge_patch(current, body)
                else:
                    raise E.unsupported_media_type(ct, [P.JSON_PATCH, P.MERGE_PATCH, P.STRATEGIC_PATCH])
            except P.PatchError as e:
                raise E.ApiError(422, "Invalid", str(e)) from None
            return _json(await api.update_scale(rt, t.namespace, t.name, new, params, user))
        raise E.method_not_allowed()

    async def _delete_options(self, request: web.Request) -> Obj:
        opts: Obj = {}
        raw = await request.read()
        if raw.strip():
            body = await self._body(request)
            if not isinstance(body, dict):
                raise E.bad_request("DeleteOptions must be a JSON object")
            opts.update(body)
        q = request.query
        if "gracePeriodSeconds" in q:
            try:
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise E.bad_request(f"gracePeriodSeconds: invalid value {q['gracePeriodSeconds']!r}") from None
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "orphanDependents" in q:
            opts["orphanDependents"] = q["orphanDependents"] == "true"
        return opts

    def _extra_fields(self, rt: ResourceType) -> tuple[str, ...]:
        if rt.crd:
            return tuple(f.get("jsonPath", "").lstrip(".") for f in (rt.crd.get("selectableFields") or []))
        return ()

    def _printer(self, rt: ResourceType) -> printers.Printer:
        if rt.crd is not None:
            cols = rt.crd.get("additionalPrinterColumns")
            return printers.crd_printer(printers.CRD_DEFAULT_COLUMNS if cols is None else cols)
        return printers.PRINTERS.get((rt.group, rt.kind)) or printers.PRINTERS.get(("", rt.kind) if rt.group == "events.k8s.io" else ("-", "-")) or printers.DEFAULT

    def _table(self, rt: ResourceType, objs: list[Obj], request: web.Request, meta: Obj, version: str) -> Obj:
        if rt.group == "events.k8s.io":
            objs = [convert.event_to_core(o) for o in objs]
        tbl = printers.table(self._printer(rt), objs, include_object=request.query.get("includeObject") or "Metadata",
                             list_meta=meta)
        if version == "v1beta1":
            tbl["apiVersion"] = "meta.k8s.io/v1beta1"
        return tbl

    # ---- watch -------------------------------------------------------------------------------
    async def _watch(self, request: web.Request, rt: ResourceType, srt: ResourceType, namespace: str | None,
                     flt: listing.Filter, table_v: str | None) -> web.StreamResponse:
        store = self.store
        assert store is not None
        q = request.query
        rv = q.get("resourceVersion") or ""
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        send_initial = q.get("sendInitialEvents") == "true"
        if send_initial and (q.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks):
            raise E.invalid("ListOptions", "meta.k8s.io", "", [E.forbidden_field(
                "sendInitialEvents", "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"
                if False else "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks")])
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else random.uniform(1800, 3600)
        except ValueError:
            raise E.bad_request(f"invalid timeoutSeconds: {q.get('timeoutSeconds')}") from None
        ns = namespace if srt.namespaced else None
        initial: list[Obj] = []
        error: E.ApiError | None = None
        watcher = None
        if send_initial or rv in ("", "0"):
            initial = [o for o in store.list(srt.key, ns) if flt.matches(o)]
            watcher, backlog = store.subscribe(srt.key, ns, None)
        else:
            try:
                since = int(rv)
            except ValueError:
                raise E.bad_request(f"invalid resource version: {rv}") from None
            try:
                watcher, backlog = store.subscribe(srt.key, ns, since)
            except Expired as e:
                error = E.gone(str(e))
                backlog = []
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        def encode(typ: str, obj: Obj) -> bytes:
            if typ not in ("ERROR", "BOOKMARK"):
                obj = self.present(rt, obj)
                if table_v:
                    obj = self._table(rt, [obj], request, {"resourceVersion": obj["metadata"].get("resourceVersion", "")}, table_v)
            return json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n"

        def bookmark(annotations: dict[str, str] | None = None) -> bytes:
            m: Obj = {"resourceVersion": str(store.rv)}
            if annotations:
                m["annotations"] = annotations
            return encode("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": m})

        loop = asyncio.get_running_loop()
        try:
            if error is not None:
                await resp.write(encode("ERROR", error.status()))
                return resp
            assert watcher is not None
            buf = b"".join(encode("ADDED", o) for o in initial)
            if send_initial:
                buf += bookmark({"k8s.io/initial-events-end": "true"})
            for c in backlog:
                out = self._filter_change(c, flt)
                if out:
                    buf += encode(*out)
            if buf:
                await resp.write(buf)
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    change = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        await resp.write(bookmark())
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if change is None:
                    break
                chunks = []
                out = self._filter_change(change, flt)
                if out:
                    chunks.append(encode(*out))
                while not watcher.queue.empty():  # drain what is ready in one write
                    nxt = watcher.queue.get_nowait()
                    if nxt is None:
                        watcher.overflowed = True
                        break
                    out = self._filter_change(nxt, flt)
                    if out:
                        chunks.append(encode(*out))
                if chunks:
                    await resp.write(b"".join(chunks))
                if watcher.overflowed:
                    break
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            pass
        finally:
            if watcher is not None:
                store.unsubscribe(watcher)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
        return resp

    @staticmethod
    def _filter_change(c: Change, flt: listing.Filter) -> tuple[str, Obj] | None:
        if c.type == "ADDED":
            return ("ADDED", c.obj) if flt.matches(c.obj) else None
        if c.type == "DELETED":
            return ("DELETED", c.obj) if flt.matches(c.obj) else None
        new_m = flt.matches(c.obj)
        old_m = c.old is not None and flt.matches(c.old)
        if new_m and old_m:
            return ("MODIFIED", c.obj)
        if new_m:
            return ("ADDED", c.obj)
        if old_m:
            return ("DELETED", c.obj)
        return None


def version_info() -> Obj:
    major, minor, _patch = KUBERNETES_VERSION.lstrip("v").split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "minimesh",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T18:04:20Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def deepcopy(obj: Obj) -> Obj:
    return copy.deepcopy(obj)
