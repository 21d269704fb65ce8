"""Stage 4: the Pilot-like push server. Kubernetes watches → a snapshot of the mesh (PushContext) →
per-proxy translation (clusters, endpoints, listeners, routes) → ADS pushes over gRPC."""
