"""Pod annotations -> CaptureConfig, and the files the init container reads them from."""

from __future__ import annotations

import pytest

from minimesh.init.annotations import PREFIX, config_from_annotations, parse_annotations_file
from minimesh.init.rules import CaptureConfig, CaptureConfigError


def test_no_annotations_give_istio_defaults() -> None:
    assert config_from_annotations({}, [9080]) == CaptureConfig()
    assert config_from_annotations(None) == CaptureConfig()


def test_every_annotation_maps_to_its_field() -> None:
    cfg = config_from_annotations(
        {
            PREFIX + "includeInboundPorts": "9080, 9090",
            PREFIX + "excludeInboundPorts": "7001",
            PREFIX + "includeOutboundIPRanges": "10.96.0.0/12,10.244.0.0/16",
            PREFIX + "excludeOutboundIPRanges": "10.96.0.1/32",
            PREFIX + "includeOutboundPorts": "3306",
            PREFIX + "excludeOutboundPorts": "22,5432",
            "sidecar.minimesh.io/interceptionMode": "REDIRECT",
            "unrelated.example.com/annotation": "whatever",
        },
        [9080, 9090],
    )
    assert cfg.inbound_ports_include == (9080, 9090)
    assert cfg.inbound_ports_exclude == (7001,)
    assert cfg.outbound_cidrs_include == ("10.96.0.0/12", "10.244.0.0/16")
    assert cfg.outbound_cidrs_exclude == ("10.96.0.1/32",)
    assert cfg.outbound_ports_include == (3306,)
    assert cfg.outbound_ports_exclude == (22, 5432)


def test_star_and_empty_values() -> None:
    cfg = config_from_annotations(
        {PREFIX + "includeInboundPorts": "*", PREFIX + "includeOutboundIPRanges": ""}
    )
    assert cfg.inbound_ports_include == "*"
    assert cfg.outbound_cidrs_include == ()
    assert config_from_annotations({PREFIX + "includeInboundPorts": ""}).inbound_ports_include == ()


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {PREFIX + "excludeInboundPorts": "80,abc"},
            r"excludeInboundPorts='80,abc': 'abc' is not a port number",
        ),
        ({PREFIX + "excludeOutboundPorts": "0"}, r"excludeOutboundPorts='0': '0' is not a port number"),
        ({PREFIX + "includeInboundPorts": "80,*"}, r"includeInboundPorts='80,\*': '\*' is alone"),
        ({PREFIX + "excludeInboundPorts": "*"}, r"excludeInboundPorts='\*': '\*' is not allowed here"),
        (
            {PREFIX + "includeOutboundIPRanges": "10.0.0.0/8,nonsense"},
            r"includeOutboundIPRanges: .*'nonsense'",
        ),
        ({PREFIX + "excludeOutboundIPRanges": "::1/128"}, r"excludeOutboundIPRanges: .*IPv6"),
        ({PREFIX + "includeInboundPorts": "15021"}, r"includeInboundPorts: .*15021 belongs to the proxy"),
        ({PREFIX + "excludeInboundPort": "80"}, r"excludeInboundPort is not known; use one of"),
        ({PREFIX + "excludeInboundPorts": 80}, r"must be a string"),
        (
            {"sidecar.minimesh.io/interceptionMode": "TPROXY"},
            r"interceptionMode: .*TPROXY is not implemented",
        ),
    ],
)
def test_bad_annotations_name_the_annotation_and_value(annotations: dict, message: str) -> None:
    with pytest.raises(CaptureConfigError, match=message):
        config_from_annotations(annotations)


def test_container_port_that_collides_with_the_proxy_is_an_error() -> None:
    with pytest.raises(CaptureConfigError, match="containerPort 15001 collides"):
        config_from_annotations({}, [9080, 15001])


def test_downward_api_file() -> None:
    text = (
        'kubernetes.io/config.seen="2024-01-01T00:00:00Z"\n'
        f'{PREFIX}excludeInboundPorts="7001,7002"\n'
        'odd="quote \\" and\\nnewline"\n'
    )
    got = parse_annotations_file(text)
    assert got[PREFIX + "excludeInboundPorts"] == "7001,7002"
    assert got["odd"] == 'quote " and\nnewline'


def test_json_annotations_file() -> None:
    assert parse_annotations_file('{"a": "1", "b": "*"}') == {"a": "1", "b": "*"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=1\n", r"f:1: want key=\"value\""),
        ('ok="1"\n\nbad="unterminated\n', r"f:3: cannot read the quoted value"),
        ("{not json", r"f: not valid JSON"),
        ('{"a": 1}', r"f: want a JSON object of string values"),
    ],
)
def test_bad_annotation_files_say_where(text: str, message: str) -> None:
    with pytest.raises(CaptureConfigError, match=message):
        parse_annotations_file(text, "f")
