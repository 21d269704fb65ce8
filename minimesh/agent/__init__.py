"""minimesh's sidecar agent (Istio's pilot-agent): `python -m minimesh.agent proxy sidecar ...`.

It runs in the injected `minimesh-proxy` container (uid 1337), next to the app:

  identity.py   the pod's identity from env and downward-API files (pure)
  bootstrap.py  the proxy's bootstrap: node id and metadata, admin, ADS to the push server (pure)
  probers.py    the app's original kubelet probes, run from inside the pod
  status.py     HTTP on 15020 (app probes, metrics, /quitquitquit) and 15021 (/healthz/ready)
  proxyproc.py  the proxy as a child process, and its admin API
  agent.py      the lifecycle: start, readiness, drain on SIGTERM, exit with the proxy
"""
