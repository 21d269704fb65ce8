"""bookinfo-lite's pure parts: data, version rules, header propagation, page rendering, settings."""

from __future__ import annotations

import pytest

from minimesh.apps.bookinfo import data, render
from minimesh.apps.bookinfo.headers import PROPAGATED, propagated_headers
from minimesh.apps.bookinfo.settings import SettingsError, settings_from


def test_details_carry_every_field_istio_shows() -> None:
    d = data.details_for(0)
    for key in ("id", "author", "year", "type", "pages", "publisher", "language", "ISBN-10", "ISBN-13"):
        assert key in d, key
    assert d["author"] == "William Shakespeare"


@pytest.mark.parametrize("raw", ["1", "-0x", "abc", "", "0.0"])
def test_only_product_zero_exists(raw: str) -> None:
    with pytest.raises(data.UnknownProduct, match="only id 0"):
        data.parse_product_id(raw)
    assert data.parse_product_id("0") == 0


def test_reviews_v1_has_no_ratings_even_when_given() -> None:
    r = data.build_reviews(0, "v1", {"Reviewer1": 5, "Reviewer2": 4})
    assert [x["reviewer"] for x in r["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert all("rating" not in x for x in r["reviews"])


@pytest.mark.parametrize(("version", "color"), [("v2", "black"), ("v3", "red")])
def test_reviews_v2_v3_colour_the_stars(version: str, color: str) -> None:
    r = data.build_reviews(0, version, {"Reviewer1": 5, "Reviewer2": 4})
    assert [x["rating"] for x in r["reviews"]] == [{"stars": 5, "color": color}, {"stars": 4, "color": color}]


def test_reviews_without_ratings_say_ratings_are_unavailable() -> None:
    r = data.build_reviews(0, "v2", None)
    assert all(x["rating"] == {"error": data.RATINGS_UNAVAILABLE} for x in r["reviews"])


def test_unknown_reviews_version_is_an_error_not_v1() -> None:
    with pytest.raises(ValueError, match="v4"):
        data.build_reviews(0, "v4", None)


def test_propagation_keeps_trace_and_identity_headers_only() -> None:
    incoming = {
        "X-Request-Id": "r1", "X-B3-TraceId": "t", "X-B3-SpanId": "s", "X-B3-ParentSpanId": "p",
        "X-B3-Sampled": "1", "traceparent": "00-abc-def-01", "User-Agent": "curl/8", "end-user": "jason",
        "Cookie": "user=jason", "Host": "productpage:9080", "Content-Length": "3", "Authorization": "Bearer x",
    }
    out = propagated_headers(incoming)
    assert out == {
        "x-request-id": "r1", "x-b3-traceid": "t", "x-b3-spanid": "s", "x-b3-parentspanid": "p",
        "x-b3-sampled": "1", "traceparent": "00-abc-def-01", "user-agent": "curl/8", "end-user": "jason",
    }
    assert set(out) <= set(PROPAGATED)


def test_propagation_of_repeated_headers_keeps_the_first() -> None:
    assert propagated_headers([("x-request-id", "a"), ("X-Request-ID", "b")]) == {"x-request-id": "a"}


def test_page_renders_details_and_stars() -> None:
    html = render.product_page(
        data.PRODUCT, details=data.details_for(0), details_error=None,
        reviews=data.build_reviews(0, "v3", data.RATINGS, pod_name="reviews-v3-abc"), reviews_error=None, user=None,
    )
    assert "The Comedy of Errors" in html and "PublisherA" in html and "123-1234567890" in html
    assert html.count('class="stars stars-red"') == 2 and "★★★★★" in html and "★★★★☆" in html
    assert "reviews-v3-abc (v3)" in html


def test_page_with_failed_dependencies_still_renders_and_says_why() -> None:
    html = render.product_page(
        data.PRODUCT, details=None, details_error="details answered HTTP 403: RBAC: access denied",
        reviews=None, reviews_error="reviews did not answer within 3s", user="jason",
    )
    assert data.DETAILS_UNAVAILABLE in html and data.REVIEWS_UNAVAILABLE in html
    assert "RBAC: access denied" in html and "within 3s" in html
    assert "The Comedy of Errors" in html and "jason" in html


def test_page_escapes_what_others_control() -> None:
    hostile = {"reviews": [{"reviewer": "<script>x</script>", "text": "<b>hi</b>", "rating": {"error": "<i>"}}],
               "podname": "<podx>", "version": "v2"}
    html = render.product_page(
        data.PRODUCT, details={"type": "<img src=x>"}, details_error=None, reviews=hostile, reviews_error=None,
        user="<u>",
    )
    for raw in ("<script>", "<b>hi", "<img src=x>", "<u>", "<i>", "<podx>"):
        assert raw not in html, raw


def test_settings_defaults_point_at_the_service_names() -> None:
    s = settings_from("productpage", host="0.0.0.0", port=9080, env={})
    assert (s.details_url, s.reviews_url, s.ratings_url) == (
        "http://details:9080", "http://reviews:9080", "http://ratings:9080",
    )
    assert s.version == "v1" and s.upstream_timeout == 3.0


def test_reviews_timeouts_follow_istio_per_version() -> None:
    assert settings_from("reviews", host="h", port=1, env={"SERVICE_VERSION": "v2"}).ratings_timeout == 10.0
    assert settings_from("reviews", host="h", port=1, env={"SERVICE_VERSION": "v3"}).ratings_timeout == 2.5


@pytest.mark.parametrize(
    ("service", "env", "port", "needle"),
    [
        ("catalog", {}, 9080, "unknown service 'catalog'"),
        ("details", {"SERVICE_VERSION": "latest"}, 9080, "SERVICE_VERSION='latest'"),
        ("reviews", {"SERVICE_VERSION": "v7"}, 9080, "'v7' is not one of v1, v2, v3"),
        ("productpage", {"DETAILS_URL": "https://details:9080"}, 9080, "DETAILS_URL='https://details:9080'"),
        ("productpage", {"REVIEWS_URL": "http://reviews:9080/x"}, 9080, "REVIEWS_URL"),
        ("productpage", {"UPSTREAM_TIMEOUT": "soon"}, 9080, "UPSTREAM_TIMEOUT='soon'"),
        ("productpage", {"UPSTREAM_TIMEOUT": "-1"}, 9080, "positive"),
        ("reviews", {"SERVICE_VERSION": "v2", "RATINGS_TIMEOUT": "nan"}, 9080, "RATINGS_TIMEOUT"),
        ("details", {}, 70000, "--port 70000"),
    ],
)
def test_bad_settings_name_the_variable_and_value(service: str, env: dict[str, str], port: int, needle: str) -> None:
    with pytest.raises(SettingsError) as e:
        settings_from(service, host="0.0.0.0", port=port, env=env)
    assert needle in str(e.value)
