"""Stage 5: the sidecar-injection webhook (a MutatingAdmissionWebhook, Istio's injector).

`python -m minimesh.inject` serves it; `python -m minimesh.inject.offline -f pod.yaml` injects YAML
offline. The JSON Patch builder (`patch.py`) is the lab-05 exercise; see model.py for the pipeline.
"""
