"""Sample workloads the mesh carries: bookinfo-lite, a sleep client and an echo server."""
