"""Kubernetes `$(VAR)` expansion for env values, command and args (pure).

Port of k8s.io/kubernetes/third_party/forked/golang/expansion: `$(VAR)` becomes the variable's value when
it is defined and stays as written when not; `$$` is an escaped `$`, so `$$(VAR)` stays `$(VAR)`.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close < 0:
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:close]
                    out.append(env.get(name, f"$({name})"))
                    advance = close + 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def command_line(image_entrypoint: list[str], image_cmd: list[str], command: list[str] | None,
                 args: list[str] | None, env: Mapping[str, str]) -> list[str]:
    """What the container runs, with Kubernetes' override rules for command/args vs the image.

    command set → it replaces the entrypoint and the image cmd is ignored; args set → it replaces the
    image cmd. Only the pod's command and args are expanded (the image's are taken literally).
    """
    if command:
        argv = [expand(c, env) for c in command] + [expand(a, env) for a in (args or [])]
    elif args:
        argv = list(image_entrypoint) + [expand(a, env) for a in args]
    else:
        argv = list(image_entrypoint) + list(image_cmd)
    return argv
