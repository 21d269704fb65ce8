"""Small config types shared by listeners, clusters and routes: addresses, header mutations, matchers."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from minimesh.proxy.config._reader import ConfigError, Node, drop_empty


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """Envoy's `address: {socket_address: {address, port_value}}` (TCP only)."""

    address: str
    port_value: int

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port_value}"

    def to_dict(self) -> dict[str, Any]:
        return {"socket_address": {"address": self.address, "port_value": self.port_value}}


@dataclass(frozen=True, slots=True)
class PipeAddress:
    """Envoy's `address: {pipe: {path}}`: a unix socket (only the agent's SDS server is reached this way)."""

    path: str

    @property
    def address(self) -> str:
        return self.path

    @property
    def port_value(self) -> int:
        return 0

    @property
    def hostport(self) -> str:
        return f"unix:{self.path}"

    def to_dict(self) -> dict[str, Any]:
        return {"pipe": {"path": self.path}}


def parse_address(node: Node, *, allow_hostname: bool = False, allow_port_zero: bool = True,
                  allow_pipe: bool = False) -> SocketAddress:
    """Parse `{socket_address: {address, port_value, protocol?}}` (or `{pipe: {path}}` where allowed)."""
    which = node.one_of("socket_address", "pipe", "envoy_internal_address")
    if which == "pipe" and allow_pipe:
        def pipe(n: Node) -> PipeAddress:
            n.ignore("mode")
            path = n.nonempty_str("path")
            if not path.startswith("/"):
                raise n.error(f"{path!r}: want an absolute path", "path")
            return PipeAddress(path)

        found = node.obj("pipe", pipe)
        assert found is not None
        return found  # type: ignore[return-value]  # duck-typed: address, port_value, hostport, to_dict
    if which != "socket_address":
        raise node.error(f"{which} addresses are not supported here, use socket_address", which)

    def sock(n: Node) -> SocketAddress:
        addr = n.nonempty_str("address")
        n.enum("protocol", ("TCP",), "TCP")
        port = n.int("port_value", 0, minimum=0 if allow_port_zero else 1, maximum=65535)
        n.ignore("ipv4_compat", "resolver_name")
        if not allow_hostname:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise n.error(f"{addr!r} is not an IP address", "address") from None
        return SocketAddress(addr, port)

    result = node.obj("socket_address", sock)
    assert result is not None
    return result


@dataclass(frozen=True, slots=True)
class HeaderValueOption:
    """`{header: {key, value}, append_action}` from `request_headers_to_add` / `response_headers_to_add`."""

    key: str
    value: str
    append_action: str = "APPEND_IF_EXISTS_OR_ADD"

    def to_dict(self) -> dict[str, Any]:
        return {"header": {"key": self.key, "value": self.value}, "append_action": self.append_action}


APPEND_ACTIONS = ("APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD",
                  "OVERWRITE_IF_EXISTS")


def parse_header_value_option(node: Node) -> HeaderValueOption:
    def header(n: Node) -> tuple[str, str]:
        key = n.nonempty_str("key")
        if key != key.strip() or ":" in key.lstrip(":") or any(c.isspace() for c in key):
            raise n.error(f"invalid header name {key!r}", "key")
        return key.lower(), n.str("value", "")

    kv = node.obj("header", header, required=True)
    assert kv is not None
    action = node.enum("append_action", APPEND_ACTIONS, "APPEND_IF_EXISTS_OR_ADD")
    if node.has("append"):  # the deprecated BoolValue form
        action = "APPEND_IF_EXISTS_OR_ADD" if node.bool("append", True) else "OVERWRITE_IF_EXISTS_OR_ADD"
    node.ignore("keep_empty_value")
    return HeaderValueOption(kv[0], kv[1], action)


def compile_regex(regex: str, path: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as e:
        raise ConfigError(path, f"bad regex {regex!r}: {e}") from None


def parse_regex_matcher(node: Node) -> re.Pattern[str]:
    """`safe_regex: {regex, google_re2?}` (Envoy uses RE2; we use Python's `re`, full match)."""
    node.ignore("google_re2")
    return compile_regex(node.nonempty_str("regex"), node.sub("regex"))


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """envoy.type.matcher.v3.StringMatcher: exactly one of exact/prefix/suffix/contains/regex is set."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    contains: str | None = None
    regex: re.Pattern[str] | None = None
    ignore_case: bool = False

    def matches(self, value: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(value) is not None
        if self.ignore_case:
            value = value.lower()
        pick = (lambda s: s.lower()) if self.ignore_case else (lambda s: s)
        if self.exact is not None:
            return value == pick(self.exact)
        if self.prefix is not None:
            return value.startswith(pick(self.prefix))
        if self.suffix is not None:
            return value.endswith(pick(self.suffix))
        assert self.contains is not None
        return pick(self.contains) in value

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = drop_empty({"exact": self.exact, "prefix": self.prefix, "suffix": self.suffix,
                                        "contains": self.contains})
        if self.regex is not None:
            d["safe_regex"] = {"regex": self.regex.pattern}
        if self.ignore_case:
            d["ignore_case"] = True
        return d


def parse_string_matcher(node: Node) -> StringMatcher:
    which = node.one_of("exact", "prefix", "suffix", "contains", "safe_regex")
    ignore_case = node.bool("ignore_case")
    if which == "safe_regex":
        if ignore_case:
            raise node.error("ignore_case has no effect on safe_regex", "ignore_case")
        regex = node.obj("safe_regex", parse_regex_matcher)
        return StringMatcher(regex=regex)
    value = node.str(which)
    if which != "exact" and not value:
        raise node.error("must not be empty", which)
    return StringMatcher(**{which: value}, ignore_case=ignore_case)  # type: ignore[arg-type]
