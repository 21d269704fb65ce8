"""The rule text of the init container (pure): Istio's order and semantics under our chain names."""

from __future__ import annotations

import pytest

from minimesh.init.rules import (
    CaptureConfig,
    CaptureConfigError,
    build_apply,
    build_cleanup,
    build_rules,
    inbound_rules,
    outbound_rules,
    parse_nat,
    verify,
)

# Istio's empty.golden (istio-iptables defaults) with our chain names, plus the injector's
# default inbound exclusions (Istio: -d 15090,15021,15020; we also keep the admin port 15000).
DEFAULT_RULES = """\
*nat
:MESH_INBOUND - [0:0]
:MESH_REDIRECT - [0:0]
:MESH_IN_REDIRECT - [0:0]
:MESH_OUTPUT - [0:0]
-A MESH_INBOUND -p tcp --dport 15008 -j RETURN
-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j MESH_INBOUND
-A MESH_INBOUND -p tcp --dport 15000 -j RETURN
-A MESH_INBOUND -p tcp --dport 15020 -j RETURN
-A MESH_INBOUND -p tcp --dport 15021 -j RETURN
-A MESH_INBOUND -p tcp --dport 15090 -j RETURN
-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT
-A OUTPUT -p tcp -j MESH_OUTPUT
-A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j MESH_IN_REDIRECT
-A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j MESH_IN_REDIRECT
-A MESH_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN
-A MESH_OUTPUT -j MESH_REDIRECT
COMMIT
"""


def body(text: str) -> str:
    """The restore input without comment lines."""
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


def test_default_rules_match_istio_shape() -> None:
    assert body(build_rules(CaptureConfig())) == DEFAULT_RULES


def test_rules_start_with_a_comment_that_describes_them() -> None:
    first = build_rules(CaptureConfig(inbound_ports_exclude=(7001,))).splitlines()[0]
    assert first.startswith("# minimesh capture:") and "7001" in first


def test_custom_ports_and_ids() -> None:
    text = build_rules(CaptureConfig(proxy_port=16001, inbound_port=16006, proxy_uid=2000, proxy_gid=3000))
    assert "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 16001" in text
    assert "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006" in text
    assert "-m owner --uid-owner 2000 -j RETURN" in text
    assert "-m owner --gid-owner 3000 -j RETURN" in text
    assert "1337" not in text


def test_inbound_exclusions_follow_the_proxy_ports_without_duplicates() -> None:
    rules = inbound_rules(CaptureConfig(inbound_ports_exclude=(7001, 15021, 7002, 7001)))
    assert rules == [
        "-A PREROUTING -p tcp -j MESH_INBOUND",
        "-A MESH_INBOUND -p tcp --dport 15000 -j RETURN",
        "-A MESH_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A MESH_INBOUND -p tcp --dport 15021 -j RETURN",
        "-A MESH_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A MESH_INBOUND -p tcp --dport 7001 -j RETURN",
        "-A MESH_INBOUND -p tcp --dport 7002 -j RETURN",
        "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT",
    ]


def test_inbound_include_list_redirects_only_those_ports() -> None:
    # Istio's inbound-ports-include.golden: exclusions are irrelevant when only listed ports are captured.
    rules = inbound_rules(CaptureConfig(inbound_ports_include=[32000, 31000], inbound_ports_exclude=[7001]))
    assert rules == [
        "-A PREROUTING -p tcp -j MESH_INBOUND",
        "-A MESH_INBOUND -p tcp --dport 32000 -j MESH_IN_REDIRECT",
        "-A MESH_INBOUND -p tcp --dport 31000 -j MESH_IN_REDIRECT",
    ]


def test_empty_inbound_include_captures_no_inbound_traffic() -> None:
    cfg = CaptureConfig(inbound_ports_include=())
    assert inbound_rules(cfg) == []
    text = build_rules(cfg)
    assert "PREROUTING" not in text
    # The chain still exists with the tunnel rule, as istio-iptables leaves it.
    assert "-A MESH_INBOUND -p tcp --dport 15008 -j RETURN" in text


def test_outbound_port_exclusions_come_first() -> None:
    rules = outbound_rules(CaptureConfig(outbound_ports_exclude=(22, 5432)))
    assert rules[:4] == [
        "-A OUTPUT -p tcp -j MESH_OUTPUT",
        "-A MESH_OUTPUT -p tcp --dport 22 -j RETURN",
        "-A MESH_OUTPUT -p tcp --dport 5432 -j RETURN",
        "-A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
    ]


def test_outbound_cidrs_exclude_then_ports_then_include() -> None:
    # Istio's ip-range.golden order: 127.0.0.1 RETURN, excluded CIDRs, included ports, included CIDRs.
    cfg = CaptureConfig(
        outbound_cidrs_include=["9.9.0.0/16", "10.96.0.10"],
        outbound_cidrs_exclude=["1.1.7.7/16"],
        outbound_ports_include=[3306],
    )
    assert outbound_rules(cfg)[-5:] == [
        "-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A MESH_OUTPUT -d 1.1.0.0/16 -j RETURN",
        "-A MESH_OUTPUT -p tcp --dport 3306 -j MESH_REDIRECT",
        "-A MESH_OUTPUT -d 9.9.0.0/16 -j MESH_REDIRECT",
        "-A MESH_OUTPUT -d 10.96.0.10/32 -j MESH_REDIRECT",
    ]
    assert "-A MESH_OUTPUT -j MESH_REDIRECT" not in outbound_rules(cfg)


def test_empty_outbound_include_redirects_only_included_ports() -> None:
    rules = outbound_rules(CaptureConfig(outbound_cidrs_include=(), outbound_ports_include=(9080,)))
    redirects = [r for r in rules if r.endswith("-j MESH_REDIRECT")]
    assert redirects == ["-A MESH_OUTPUT -p tcp --dport 9080 -j MESH_REDIRECT"]


def test_loopback_include_keeps_app_traffic_over_lo_captured() -> None:
    # Istio: "If loopback explicitly set via OutboundIPRangesInclude, then don't return."
    rules = outbound_rules(CaptureConfig(outbound_cidrs_include=["127.1.2.3/32"]))
    assert not any("-o lo -m owner !" in r for r in rules)
    assert any("-o lo -m owner ! --uid-owner 1337 -j RETURN" in r for r in outbound_rules(CaptureConfig()))


def test_proxy_rules_for_uid_then_gid_in_istio_order() -> None:
    rules = outbound_rules(CaptureConfig())
    owner = [r for r in rules if "-owner" in r]
    assert [("uid" if "--uid-owner" in r else "gid", r.split(" -j ")[1]) for r in owner] == [
        ("uid", "MESH_IN_REDIRECT"),
        ("uid", "RETURN"),
        ("uid", "RETURN"),
        ("gid", "MESH_IN_REDIRECT"),
        ("gid", "RETURN"),
        ("gid", "RETURN"),
    ]
    # The passthrough source must come before the proxy's lo rule, or proxy -> app would loop to 15006.
    assert rules.index("-A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN") < rules.index(owner[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"redirect_mode": "TPROXY"}, "TPROXY is not implemented"),
        ({"redirect_mode": "NONE"}, "redirect_mode: 'NONE' is not supported"),
        ({"proxy_port": 0}, "proxy_port: 0 is not a port number"),
        ({"inbound_port": "15006"}, "inbound_port: '15006' is not a port number"),
        ({"inbound_port": 15001}, "must differ"),
        ({"proxy_uid": -1}, "proxy_uid: -1 is not a user/group id"),
        ({"inbound_ports_include": [80, 15006]}, "port 15006 belongs to the proxy"),
        ({"inbound_ports_include": "80"}, "give '*' or a list of ports"),
        ({"inbound_ports_exclude": [70000]}, "inbound_ports_exclude: 70000 is not a port number"),
        ({"outbound_cidrs_exclude": "*"}, "'*' is not allowed"),
        ({"outbound_cidrs_include": ["10.0.0.0/33"]}, "outbound_cidrs_include: '10.0.0.0/33' is not an IPv4"),
        ({"outbound_cidrs_exclude": ["fd00::/8"]}, "IPv6; minimesh captures IPv4 only"),
        ({"outbound_ports_include": [True]}, "outbound_ports_include: True is not a port number"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(CaptureConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
        CaptureConfig(**kwargs)


# iptables-nft-save output of a pod with the capture installed next to someone else's rule.
SAVED = """\
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Nov 24 20:27:25 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j MESH_OUTPUT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:MESH_INBOUND - [0:0]
:MESH_IN_REDIRECT - [0:0]
:MESH_OUTPUT - [0:0]
:MESH_REDIRECT - [0:0]
:KUBE-SOMETHING - [0:0]
-A PREROUTING -p tcp -j MESH_INBOUND
-A OUTPUT -p tcp -j MESH_OUTPUT
-A OUTPUT -m comment --comment "kube services" -j KUBE-SOMETHING
-A MESH_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN
-A MESH_OUTPUT -j MESH_REDIRECT
-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"""


def test_cleanup_removes_only_our_jumps_and_chains() -> None:
    assert build_cleanup(SAVED).splitlines()[1:] == [
        "*nat",
        "-D PREROUTING -p tcp -j MESH_INBOUND",
        "-D OUTPUT -p tcp -j MESH_OUTPUT",
        "-F MESH_INBOUND",
        "-F MESH_IN_REDIRECT",
        "-F MESH_OUTPUT",
        "-F MESH_REDIRECT",
        "-X MESH_INBOUND",
        "-X MESH_IN_REDIRECT",
        "-X MESH_OUTPUT",
        "-X MESH_REDIRECT",
        "COMMIT",
    ]


def test_cleanup_of_a_clean_namespace_is_empty() -> None:
    assert build_cleanup("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") == ""


def test_apply_replaces_an_installed_capture_in_one_transaction() -> None:
    lines = build_apply(CaptureConfig(), SAVED).splitlines()
    nat = lines.index("*nat")
    assert lines[nat + 1] == "-D PREROUTING -p tcp -j MESH_INBOUND"
    assert lines.index("-X MESH_REDIRECT") < lines.index(":MESH_INBOUND - [0:0]")
    assert lines[-1] == "COMMIT" and lines.count("COMMIT") == 1
    assert body(build_apply(CaptureConfig(), "")) == DEFAULT_RULES


def test_verify_accepts_what_iptables_save_prints_and_finds_missing_rules() -> None:
    rules = build_rules(CaptureConfig())
    # What iptables-save prints for these rules: canonical option order, `-m tcp` added, chains sorted.
    state = parse_nat(rules)
    saved_lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    saved_lines += [f":{c} - [0:0]" for c in sorted(state.chains)]
    saved_lines += [
        f"-A {chain} {rest.replace('-p tcp --dport', '-p tcp -m tcp --dport')}" for chain, rest in state.rules
    ]
    saved = "\n".join([*saved_lines, "COMMIT"])
    assert verify(rules, saved) == []
    broken = saved.replace("-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN\n", "").replace(
        "-A OUTPUT -p tcp -j MESH_OUTPUT\n", ""
    )
    assert verify(rules, broken) == [
        "chain MESH_OUTPUT: want 9 rules, iptables-save shows 8",
        "chain OUTPUT: want 1 jumps into MESH_ chains, iptables-save shows 0",
    ]
    assert verify(rules, "*nat\nCOMMIT\n")[0] == "chain MESH_INBOUND is missing"
