"""The notebooks' pictures, from API-shaped objects."""

from __future__ import annotations

from minimesh.lab.draw import cluster_picture, cpu_chart


def pod(name: str, ip: str, containers: list[dict], init: list[dict] | None = None, ready: int = 1) -> dict:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "node-a", "containers": containers, "initContainers": init or []},
        "status": {"phase": "Running", "podIP": ip,
                   "containerStatuses": [{"ready": i < ready} for i in range(len(containers))]},
    }


def test_cluster_picture_shows_pods_containers_and_services() -> None:
    pods = [
        pod("web-1", "10.244.0.5", [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]},
                                    {"name": "sidecar", "image": "busybox"}],
            init=[{"name": "proxy", "image": "minimesh/minimesh:dev", "restartPolicy": "Always"}], ready=1),
        pod("api-1", "10.244.0.6", [{"name": "api", "image": "minimesh/minimesh:dev"}]),
        {"metadata": {"name": "elsewhere", "namespace": "other"}, "spec": {}, "status": {}},
    ]
    services = [{"metadata": {"name": "web", "namespace": "default"},
                 "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
                          "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}}]
    endpoints = [{"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.244.0.5"}]}]}]
    got = cluster_picture(pods, services, endpoints)
    assert got == (
        "node node-a\n"
        "├─ pod api-1  10.244.0.6  Running  ready 1/1\n"
        "│  └─ container api  [minimesh/minimesh:dev]\n"
        "└─ pod web-1  10.244.0.5  Running  ready 1/2\n"
        "   ├─ sidecar proxy  [minimesh/minimesh:dev]\n"
        "   ├─ container web  [nginx]  :80\n"
        "   └─ container sidecar  [busybox]\n"
        "\n"
        "services\n"
        "  web  NodePort 10.96.0.20  :80→8080 (node 30080)\n"
        "      → web-1\n"
    )


def test_cpu_chart_draws_a_figure() -> None:
    import matplotlib

    matplotlib.use("Agg")
    fig = cpu_chart(2000, {"a": 500, "b": 100})
    assert "600m of 2000m requested" in fig.axes[0].get_title()
