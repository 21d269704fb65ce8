"""bookinfo-lite as real processes on loopback: the page, the API, failures, propagation, logs, signals."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import pytest

from minimesh.apps.bookinfo import data

BOOKINFO = "minimesh.apps.bookinfo"
LOOPBACK = ("--host", "127.0.0.1", "--port", "0")


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def backends(start_shared):  # type: ignore[no-untyped-def]
    """details, ratings and the three reviews versions, wired to each other (shared: they keep no state)."""
    details = start_shared(BOOKINFO, "details", *LOOPBACK)
    ratings = start_shared(BOOKINFO, "ratings", *LOOPBACK)
    reviews = {
        v: start_shared(BOOKINFO, "reviews", *LOOPBACK, env={"SERVICE_VERSION": v, "RATINGS_URL": ratings.url, "POD_NAME": f"reviews-{v}-pod"})
        for v in ("v1", "v2", "v3")
    }
    return details, ratings, reviews


def productpage(start, *, details: str, reviews: str, ratings: str = "http://127.0.0.1:9", **env: str):  # type: ignore[no-untyped-def]
    return start(
        BOOKINFO, "productpage", *LOOPBACK,
        env={"DETAILS_URL": details, "REVIEWS_URL": reviews, "RATINGS_URL": ratings, **env},
    )


def test_details_and_ratings_answer_json(backends) -> None:  # type: ignore[no-untyped-def]
    details, ratings, _ = backends
    status, body = get(f"{details.url}/details/0")
    assert status == 200 and json.loads(body) == data.details_for(0)
    status, body = get(f"{ratings.url}/ratings/0")
    assert status == 200 and json.loads(body) == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    status, body = get(f"{details.url}/details/7")
    assert status == 400 and "only id 0" in json.loads(body)["error"]
    status, body = get(f"{details.url}/nope")
    assert status == 404 and "GET /nope" in json.loads(body)["error"]
    for app, name in ((details, "Details"), (ratings, "Ratings")):
        status, body = get(f"{app.url}/health")
        assert status == 200 and json.loads(body)["status"] == f"{name} is healthy"


@pytest.mark.parametrize(("version", "stars"), [("v1", None), ("v2", "black"), ("v3", "red")])
def test_productpage_shows_details_and_the_reviews_of_each_version(start, backends, version, stars) -> None:  # type: ignore[no-untyped-def]
    details, ratings, reviews = backends
    page = productpage(start, details=details.url, reviews=reviews[version].url, ratings=ratings.url)
    status, html = get(f"{page.url}/productpage")
    assert status == 200
    assert "The Comedy of Errors" in html and "William Shakespeare" in html and "123-1234567890" in html
    assert "An extremely entertaining play by Shakespeare" in html
    assert f"reviews-{version}-pod ({version})" in html
    if stars is None:
        assert 'class="stars' not in html
    else:
        assert html.count(f'class="stars stars-{stars}"') == 2


def test_productpage_api(start, backends) -> None:  # type: ignore[no-untyped-def]
    details, ratings, reviews = backends
    page = productpage(start, details=details.url, reviews=reviews["v2"].url, ratings=ratings.url)
    status, body = get(f"{page.url}/api/v1/products")
    assert status == 200 and json.loads(body)[0]["title"] == "The Comedy of Errors"
    status, body = get(f"{page.url}/api/v1/products/0")
    assert status == 200 and json.loads(body)["ISBN-10"] == "1234567890"
    status, body = get(f"{page.url}/api/v1/products/0/reviews")
    assert status == 200 and json.loads(body)["reviews"][0]["rating"] == {"stars": 5, "color": "black"}
    status, body = get(f"{page.url}/api/v1/products/0/ratings")
    assert status == 200 and json.loads(body)["ratings"]["Reviewer2"] == 4
    status, body = get(f"{page.url}/health")
    assert status == 200 and json.loads(body)["status"] == "Product page is healthy"


def test_page_survives_a_dead_details_and_a_dead_ratings(start, refused_port) -> None:  # type: ignore[no-untyped-def]
    dead = f"http://127.0.0.1:{refused_port}"
    lonely_v3 = start(BOOKINFO, "reviews", *LOOPBACK, env={"SERVICE_VERSION": "v3", "RATINGS_URL": dead})
    page = productpage(start, details=dead, reviews=lonely_v3.url)
    status, html = get(f"{page.url}/productpage")
    assert status == 200
    assert data.DETAILS_UNAVAILABLE in html and "cannot reach details" in html
    assert html.count(data.RATINGS_UNAVAILABLE) == 2  # the reviews block is there, without stars
    assert "An extremely entertaining play" in html
    status, body = get(f"{page.url}/api/v1/products/0")
    assert status == 503 and "cannot reach details" in json.loads(body)["error"]


def test_page_shows_the_upstream_status_and_body(start, backends, stub) -> None:  # type: ignore[no-untyped-def]
    _, _, reviews = backends
    rbac = stub(403, b"RBAC: access denied")
    page = productpage(start, details=rbac.url, reviews=reviews["v1"].url)
    status, html = get(f"{page.url}/productpage")
    assert status == 200 and "details answered HTTP 403: RBAC: access denied" in html
    status, body = get(f"{page.url}/api/v1/products/0")
    assert status == 403 and "RBAC: access denied" in json.loads(body)["error"]


def test_slow_upstreams_are_bounded_and_reviews_is_tried_twice(start, stub) -> None:  # type: ignore[no-untyped-def]
    silent_details, silent_reviews = stub(silent=True), stub(silent=True)
    page = productpage(start, details=silent_details.url, reviews=silent_reviews.url, UPSTREAM_TIMEOUT="0.5")
    t0 = time.monotonic()
    status, html = get(f"{page.url}/productpage")
    took = time.monotonic() - t0
    assert status == 200 and "details did not answer within 0.5s" in html and "reviews did not answer within 0.5s" in html
    assert took < 5  # bounded by the timeouts, not by the silent upstreams
    assert len(silent_details.requests) == 1 and len(silent_reviews.requests) == 2


def test_trace_and_user_headers_reach_every_hop(start) -> None:  # type: ignore[no-untyped-def]
    echo = start("minimesh.apps.echo", *LOOPBACK)  # stands in for details: it answers with what it got
    page = productpage(start, details=echo.url, reviews=echo.url)
    sent = {
        "x-request-id": "req-42", "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7", "x-b3-spanid": "e457b5a2e4d86bd1",
        "x-b3-sampled": "1", "traceparent": "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
        "user-agent": "grader/1.0", "end-user": "jason", "x-not-propagated": "no",
    }
    status, body = get(f"{page.url}/api/v1/products/0", headers=sent)
    assert status == 200
    seen = json.loads(body)
    assert seen["path"] == "/details/0"
    for name, value in sent.items():
        if name == "x-not-propagated":
            assert name not in seen["headers"]
        else:
            assert seen["headers"].get(name) == value, name


def test_signed_in_user_becomes_end_user(start) -> None:  # type: ignore[no-untyped-def]
    echo = start("minimesh.apps.echo", *LOOPBACK)
    page = productpage(start, details=echo.url, reviews=echo.url)
    status, body = get(f"{page.url}/api/v1/products/0/reviews", headers={"cookie": "user=jason"})
    assert status == 200 and json.loads(body)["headers"]["end-user"] == "jason"


def test_login_sets_the_user_cookie(start, backends) -> None:  # type: ignore[no-untyped-def]
    details, _, reviews = backends
    page = productpage(start, details=details.url, reviews=reviews["v1"].url)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):  # type: ignore[no-untyped-def]
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(f"{page.url}/login", data=b"username=jason", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(req, timeout=5)
    assert e.value.code == 302 and "user=jason" in e.value.headers["set-cookie"]
    status, html = get(f"{page.url}/productpage", headers={"cookie": "user=jason"})
    assert status == 200 and "jason" in html and "sign out" in html
    status, _ = get(f"{page.url}/login")  # GET is not a login
    assert status in (404, 405)


def test_one_log_line_per_request_on_stdout(backends) -> None:  # type: ignore[no-untyped-def]
    details, _, _ = backends
    get(f"{details.url}/details/0", headers={"x-request-id": "log-me", "user-agent": "ua/1"})
    line = details.wait_for_line("log-me")
    assert '"GET /details/0 HTTP/1.1" 200' in line and "details v1" in line and 'user-agent="ua/1"' in line
    get(f"{details.url}/details/x", headers={"x-request-id": "bad-one"})
    assert '"GET /details/x HTTP/1.1" 400' in details.wait_for_line("bad-one")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_promptly_and_cleanly_on_signals(start, sig) -> None:  # type: ignore[no-untyped-def]
    app = start(BOOKINFO, "ratings", *LOOPBACK)
    assert app.stop(sig, timeout=5) == 0


def test_bad_configuration_exits_with_a_clear_message() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", BOOKINFO, "reviews", "--port", "0"], env={**__import__("os").environ, "SERVICE_VERSION": "v9"},
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2 and "SERVICE_VERSION" in proc.stderr and "'v9'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", BOOKINFO, "catalog"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "invalid choice: 'catalog'" in proc.stderr
