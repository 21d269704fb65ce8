"""The local cluster's API server: a real subset of the Kubernetes API (see `server.ApiServer`).

Modules, each with one job:
  registry    built-in (and CRD-defined) resource types: names, scope, verbs, subresources
  store       SQLite-backed object store, global resourceVersion, watch history and fan-out
  schema      the v1.32 OpenAPI definitions: type checks, unknown fields, patch metadata
  defaults    defaulting like the real API server
  validation  semantic validation with the real field paths and messages
  patch       JSON, merge, strategic-merge and apply patches
  printers    server-side printing (meta.k8s.io Table), pod STATUS like kubectl
  discovery   /api, /apis (legacy and aggregated discovery)
  openapi     /openapi/v2 and /openapi/v3 synthesized from the definitions
  rest        the request handlers (create/get/list/watch/update/patch/delete)
  server      the aiohttp application, TLS and authentication
"""
