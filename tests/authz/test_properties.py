"""Properties of the evaluator over generated rules and requests (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from minimesh.authz.engine import Request, evaluate, rule_matches, string_matches
from minimesh.authz.model import AuthorizationPolicy, Rule, parse_policy

PRINCIPALS = ["cluster.local/ns/default/sa/a", "cluster.local/ns/default/sa/b", "cluster.local/ns/foo/sa/a"]
PATHS = ["/", "/details", "/details/0", "/reviews/1", "/admin/x"]
METHODS = ["GET", "POST", "DELETE"]


def patterns(values: list[str]) -> st.SearchStrategy[str]:
    """Exact values, their prefixes as `abc*`, suffixes as `*abc`, and `*`."""
    exact = st.sampled_from(values)
    prefix = exact.flatmap(lambda v: st.integers(0, len(v)).map(lambda n: v[:n] + "*"))
    suffix = exact.flatmap(lambda v: st.integers(0, len(v)).map(lambda n: "*" + v[len(v) - n :]))
    return st.one_of(exact, prefix, suffix).filter(lambda p: p != "**")


def maybe(key: str, values: st.SearchStrategy) -> st.SearchStrategy[dict]:
    return st.one_of(st.just({}), st.lists(values, min_size=1, max_size=2).map(lambda v: {key: v}))


source = st.builds(
    lambda *parts: {k: v for part in parts for k, v in part.items()},
    maybe("principals", patterns(PRINCIPALS)),
    maybe("notPrincipals", patterns(PRINCIPALS)),
    maybe("namespaces", st.sampled_from(["default", "foo", "def*"])),
    maybe("ipBlocks", st.sampled_from(["10.0.0.0/8", "10.1.0.0/16", "192.168.0.1"])),
).filter(bool)
operation = st.builds(
    lambda *parts: {k: v for part in parts for k, v in part.items()},
    maybe("methods", st.sampled_from(METHODS)),
    maybe("notMethods", st.sampled_from(METHODS)),
    maybe("paths", patterns(PATHS)),
    maybe("ports", st.sampled_from(["9080", "9081"])),
).filter(bool)
condition = st.fixed_dictionaries(
    {
        "key": st.just("request.headers[x-user]"),
        "values": st.lists(patterns(["alice", "bob"]), min_size=1, max_size=2),
    }
)
rule_spec = st.builds(
    lambda f, t, w: {k: v for k, v in (("from", f), ("to", t), ("when", w)) if v},
    st.lists(source.map(lambda s: {"source": s}), max_size=2),
    st.lists(operation.map(lambda o: {"operation": o}), max_size=2),
    st.lists(condition, max_size=1),
)
requests = st.builds(
    Request,
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    port=st.sampled_from([9080, 9081]),
    headers=st.sampled_from([{}, {"x-user": "alice"}, {"x-user": "bob"}]),
    source_principal=st.one_of(st.none(), st.sampled_from(PRINCIPALS)),
    source_ip=st.sampled_from(["10.1.2.3", "10.2.0.1", "192.168.0.1"]),
)


def make(name: str, action: str, rules: list[dict]) -> AuthorizationPolicy:
    return parse_policy(
        {
            "apiVersion": "security.minimesh.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"action": action, "rules": rules},
        }
    )


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(rule_spec, min_size=1, max_size=3), req=requests, deny_first=st.booleans())
def test_deny_always_wins_over_allow_for_the_same_match(
    rules: list[dict], req: Request, deny_first: bool
) -> None:
    allow, deny = make("allow", "ALLOW", rules), make("deny", "DENY", rules)
    matched = any(rule_matches(r, req) for r in allow.rules)
    policies = [deny, allow] if deny_first else [allow, deny]
    decision = evaluate(policies, req)
    if matched:
        assert (decision.allowed, decision.policy_name) == (False, "default/deny")
    else:
        # Neither matches: an ALLOW policy applies and did not match, so the request is denied too.
        assert (decision.allowed, decision.policy_name) == (False, None)
    alone = evaluate([allow], req)
    assert alone.allowed is matched


@settings(max_examples=200, deadline=None)
@given(rules=st.lists(rule_spec, max_size=2), extra=st.lists(rule_spec, max_size=2), req=requests)
def test_adding_a_deny_policy_never_allows_more(rules: list[dict], extra: list[dict], req: Request) -> None:
    base = [make("allow", "ALLOW", rules)]
    with_deny = [*base, make("deny", "DENY", extra)]
    assert evaluate(with_deny, req).allowed <= evaluate(base, req).allowed


@given(
    value=st.text(alphabet=st.characters(blacklist_characters="*"), min_size=1, max_size=12),
    cut=st.integers(0, 12),
)
def test_prefix_suffix_and_presence_patterns(value: str, cut: int) -> None:
    head, tail = value[:cut], value[cut:]
    assert string_matches(head + "*", value)
    assert string_matches("*" + tail, value)
    assert string_matches("*", value)
    assert string_matches(value, value)
    assert not string_matches(value + "x", value)
    assert not string_matches("*", "") and not string_matches("*", None)


def test_rule_with_no_parts_matches_everything() -> None:
    assert rule_matches(Rule(), Request("DELETE", "/x"))
