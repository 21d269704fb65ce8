"""The local cluster's node: kubelet (with its container runtime), kube-proxy and cluster DNS.

Run by `minimesh cluster up` inside the node network namespace:
    ip netns exec mm-<name>_node python -m minimesh.cluster.local.node --name <name>
"""
