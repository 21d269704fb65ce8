"""The stage registry: the ten labs, their notebook, grader module, slides and exercise regions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minimesh.lab import exercises


@dataclass(frozen=True)
class Stage:
    id: str  # "01"
    slug: str  # file-name part: notebook "01-sidecar-pattern.ipynb"
    title: str
    grader_slug: str  # grader module "test_lab01_sidecar.py"
    summary: str
    # What the notebook does to the cluster, as `minimesh` argvs run from the checkout (paths relative to
    # it). `minimesh lab setup NN` replays them (catching up a cluster), and the project's tests do too.
    setup: tuple[tuple[str, ...], ...] = ()

    @property
    def notebook(self) -> str:
        return f"{self.id}-{self.slug}.ipynb"

    @property
    def slides(self) -> str:
        return f"{self.id}-{self.slug}.md"

    @property
    def grader(self) -> str:
        return f"test_lab{self.id}_{self.grader_slug}.py"

    @property
    def grader_glob(self) -> str:
        return f"test_lab{self.id}_*.py"

    def regions(self, root: Path) -> list[exercises.Region]:
        """This stage's exercise regions, read from `root/solutions` (empty for stages without code)."""
        return exercises.solution_regions(root, self.id)


STAGES: tuple[Stage, ...] = (
    Stage("00", "setup", "Setup", "setup", "preflight, a cluster, bookinfo-lite and sleep",
          setup=(("apply", "-f", "minimesh/manifests/bookinfo.yaml", "-f", "minimesh/manifests/sleep.yaml"),)),
    Stage("01", "sidecar-pattern", "The sidecar pattern", "sidecar",
          "nginx + a busybox sidecar, 5 replicas behind a NodePort, effective pod resources, native sidecars",
          setup=(("apply", "-f", "minimesh/manifests/lab01/"),)),
    Stage("02", "traffic-capture", "Traffic capture", "capture",
          "the init container: iptables nat rules that send every connection to the proxy",
          setup=(("apply", "-f", "minimesh/manifests/lab02/"),)),
    Stage("03", "proxy", "An Envoy-like proxy", "proxy",
          "listeners, routes, clusters, endpoints, the admin API and access logs",
          setup=(("apply", "-f", "minimesh/manifests/lab03/"),)),
    Stage("04", "push-server", "A Pilot-like push server", "push",
          "watch the cluster, build per-proxy config, push it over an ADS-shaped gRPC stream",
          setup=(("apply", "-f", "minimesh/manifests/crds/"), ("apply", "-f", "minimesh/manifests/lab04/"))),
    Stage("05", "injection", "Sidecar injection", "injection",
          "a mutating admission webhook that adds the init container and the proxy",
          # No waiting for the restarted pods here: until the exercise is done the webhook refuses them
          # (the old pods keep running); the grader waits for the rollout.
          setup=(("install",),
                 ("kubectl", "label", "namespace", "default", "minimesh-injection=enabled", "--overwrite"),
                 ("apply", "-f", "minimesh/manifests/lab05/"),
                 ("rollout", "restart", "deploy/details-v1", "deploy/ratings-v1", "deploy/reviews-v1",
                  "deploy/reviews-v2", "deploy/reviews-v3", "deploy/productpage-v1", "deploy/sleep"))),
    Stage("06", "mtls", "Mutual TLS", "mtls", "a CA, SPIFFE identities, PERMISSIVE and STRICT, proved with tcpdump",
          # minimeshd is restarted so its CA runs the trainee's sign_csr; the sidecars fetch certificates by
          # themselves (they retry), and the new pods of lab06/ are waited for by the grader, not here
          setup=(("rollout", "restart", "-n", "mesh-system", "deploy/minimeshd"),
                 ("rollout", "status", "-n", "mesh-system", "deploy/minimeshd"),
                 ("apply", "-f", "minimesh/manifests/lab06/"))),
    Stage("07", "authorization", "Authorization", "authz",
          "AuthorizationPolicy with Istio's semantics, compiled to the sidecars' RBAC filters",
          setup=(("apply", "-f", "minimesh/manifests/lab07/"),)),
    Stage("08", "ingress-traffic", "Ingress and traffic management", "ingress",
          "a gateway, canary weights, fault injection, retries and timeouts"),
    Stage("09", "operate", "Operate the mesh", "operate",
          "metrics, access logs, response flags, Jobs with sidecars, the mesh at scale"),
)


class UnknownStage(ValueError):
    pass


def get(stage: str | int) -> Stage:
    """The stage for "1", "01", 1 or "lab-01"."""
    raw = str(stage).strip().lower().removeprefix("lab-").removeprefix("lab")
    if raw.isdigit():
        sid = f"{int(raw):02d}"
        for s in STAGES:
            if s.id == sid:
                return s
    raise UnknownStage(f"no stage {stage!r}; stages are {', '.join(s.id for s in STAGES)}")
