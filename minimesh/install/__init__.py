"""`minimesh install` (the control plane into mesh-system) and `minimesh rollout` (restart, status).

plan.py renders minimesh/manifests/mesh/ (pure), pki.py makes the mesh root CA and minimeshd's serving
certificate (pure), installer.py applies them through the official client, rollout.py restarts and waits.
"""
