"""`minimesh apply|delete|exec|logs|port-forward|kubectl`: the everyday verbs, on any provider."""

from __future__ import annotations

import os
import sys

import click

from minimesh.cluster import provider as providers


def _cluster() -> providers.Cluster:
    try:
        return providers.current()
    except providers.ProviderError as e:
        raise click.ClickException(str(e)) from None


def _core():  # type: ignore[no-untyped-def]
    from kubernetes import client

    try:
        return client.CoreV1Api(_cluster().api_client())
    except providers.ProviderError as e:
        raise click.ClickException(str(e)) from None


def _api_error(e: Exception) -> click.ClickException:
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        import json

        try:
            msg = json.loads(e.body).get("message", e.body)
        except (ValueError, TypeError, AttributeError):
            msg = e.body or e.reason
        return click.ClickException(f"{e.status} {e.reason}: {msg}")
    return click.ClickException(str(e))


@click.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, help="file, directory or - (stdin)")
@click.option("-n", "--namespace", default=None)
def apply(files: tuple[str, ...], namespace: str | None) -> None:
    """Create or update objects from YAML (server-side apply), like `kubectl apply -f`."""
    from minimesh.k8s.manifests import ManifestError, apply_all, load_documents

    try:
        docs = [d for f in files for d in load_documents(f)]
        for applied in apply_all(_cluster().api_client(), docs, namespace):
            click.echo(str(applied))
    except ManifestError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:
        raise _api_error(e) from None


@click.command()
@click.option("-f", "--filename", "files", multiple=True, required=True)
@click.option("-n", "--namespace", default=None)
def delete(files: tuple[str, ...], namespace: str | None) -> None:
    """Delete the objects described in YAML files."""
    from minimesh.k8s.manifests import Applier, ManifestError, load_documents, ordered

    try:
        docs = [d for f in files for d in load_documents(f)]
        applier = Applier(_cluster().api_client())
        for doc in reversed(ordered(docs)):
            click.echo(applier.delete(doc, namespace))
    except ManifestError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:
        raise _api_error(e) from None


def _pod_name(core, namespace: str, target: str) -> str:  # type: ignore[no-untyped-def]
    from minimesh.k8s.stream import resolve_target

    try:
        return resolve_target(core, namespace, target, 0)[0]
    except Exception as e:
        raise _api_error(e) from None


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("-n", "--namespace", default="default")
@click.option("-c", "--container", default=None)
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(namespace: str, container: str | None, target: str, command: tuple[str, ...]) -> None:
    """Run a command in a pod: minimesh exec [-c C] POD|deploy/NAME -- CMD ARGS..."""
    from minimesh.k8s.stream import exec_in_pod

    core = _core()
    pod = _pod_name(core, namespace, target)
    try:
        res = exec_in_pod(core, namespace, pod, list(command), container=container, timeout=3600)
    except Exception as e:
        raise _api_error(e) from None
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    sys.exit(res.returncode)


@click.command()
@click.option("-n", "--namespace", default="default")
@click.option("-c", "--container", default=None)
@click.option("-f", "--follow", is_flag=True)
@click.option("-p", "--previous", is_flag=True, help="logs of the previous run of a restarted container")
@click.option("--tail", type=int, default=None)
@click.argument("target")
def logs(namespace: str, container: str | None, follow: bool, previous: bool, tail: int | None, target: str) -> None:
    """Print a container's logs (POD or deploy/NAME)."""
    core = _core()
    pod = _pod_name(core, namespace, target)
    kwargs = {"container": container, "previous": previous, "tail_lines": tail}
    kwargs = {k: v for k, v in kwargs.items() if v}
    try:
        if follow:
            resp = core.read_namespaced_pod_log(pod, namespace, follow=True, _preload_content=False, **kwargs)
            for chunk in resp.stream(amt=4096):
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        else:
            sys.stdout.write(core.read_namespaced_pod_log(pod, namespace, **kwargs))
    except KeyboardInterrupt:
        pass
    except Exception as e:
        raise _api_error(e) from None


@click.command("port-forward")
@click.option("-n", "--namespace", default="default")
@click.argument("target")
@click.argument("ports")
def port_forward(namespace: str, target: str, ports: str) -> None:
    """Forward 127.0.0.1:LOCAL to a pod or service port: minimesh port-forward svc/productpage 9080:9080"""
    from minimesh.k8s.stream import port_forward as forward

    local, _, remote = ports.partition(":")
    remote = remote or local
    try:
        with forward(_core(), namespace, target, int(remote), int(local)) as pf:
            click.echo(f"Forwarding from 127.0.0.1:{pf.local_port} -> {target}:{remote} (Ctrl-C to stop)")
            pf.wait()
    except KeyboardInterrupt:
        pass
    except Exception as e:
        raise _api_error(e) from None


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def kubectl(args: tuple[str, ...]) -> None:
    """Run kubectl against the current minimesh cluster (sets KUBECONFIG)."""
    env = dict(os.environ, KUBECONFIG=str(_cluster().kubeconfig))
    try:
        os.execvpe("kubectl", ["kubectl", *args], env)
    except FileNotFoundError:
        raise click.ClickException("kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/") from None
