"""The one book bookinfo-lite knows about, and the pure rules of each service (no I/O here).

The data mirrors Istio's Bookinfo sample so that Istio's tasks read the same on minimesh.
"""

from __future__ import annotations

from typing import Any

PRODUCT_ID = 0

PRODUCT: dict[str, Any] = {
    "id": PRODUCT_ID,
    "title": "The Comedy of Errors",
    "descriptionHtml": (
        '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
        "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and "
        "one of his most farcical comedies, with a major part of the humour coming from slapstick and "
        "mistaken identity, in addition to puns and word play."
    ),
}

DETAILS: dict[str, Any] = {
    "id": PRODUCT_ID,
    "author": "William Shakespeare",
    "year": 1595,
    "type": "paperback",
    "pages": 200,
    "publisher": "PublisherA",
    "language": "English",
    "ISBN-10": "1234567890",
    "ISBN-13": "123-1234567890",
}

REVIEWS: tuple[tuple[str, str], ...] = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    ("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."),
)

RATINGS: dict[str, int] = {"Reviewer1": 5, "Reviewer2": 4}

# Istio's texts, so graders and trainees recognise the degraded page.
DETAILS_UNAVAILABLE = "Sorry, product details are currently unavailable for this book."
REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"

# reviews version -> (calls ratings?, star colour). v1 shows no stars.
REVIEWS_VERSIONS: dict[str, tuple[bool, str | None]] = {
    "v1": (False, None),
    "v2": (True, "black"),
    "v3": (True, "red"),
}


class UnknownProduct(LookupError):
    def __init__(self, raw: str) -> None:
        super().__init__(f"no product with id {raw!r} (bookinfo-lite knows only id {PRODUCT_ID})")


def parse_product_id(raw: str) -> int:
    """The product id from a URL segment; only 0 exists."""
    try:
        value = int(raw)
    except ValueError:
        raise UnknownProduct(raw) from None
    if value != PRODUCT_ID:
        raise UnknownProduct(raw)
    return value


def details_for(product_id: int) -> dict[str, Any]:
    return {**DETAILS, "id": product_id}


def ratings_for(product_id: int) -> dict[str, Any]:
    return {"id": product_id, "ratings": dict(RATINGS)}


def reviews_version_rules(version: str) -> tuple[bool, str | None]:
    """(calls ratings, star colour) for a reviews version; unknown versions are an error, not v1."""
    try:
        return REVIEWS_VERSIONS[version]
    except KeyError:
        raise ValueError(
            f"reviews: SERVICE_VERSION={version!r} is not one of {', '.join(REVIEWS_VERSIONS)}"
        ) from None


def build_reviews(
    product_id: int,
    version: str,
    ratings: dict[str, int] | None,
    *,
    pod_name: str = "",
) -> dict[str, Any]:
    """The reviews service's answer.

    `ratings` is the ratings service's `ratings` map, or None when that call failed (v2/v3 then show
    the Istio error text instead of stars). v1 never looks at ratings.
    """
    with_ratings, color = reviews_version_rules(version)
    reviews: list[dict[str, Any]] = []
    for reviewer, text in REVIEWS:
        review: dict[str, Any] = {"reviewer": reviewer, "text": text}
        if with_ratings:
            if ratings is None:
                review["rating"] = {"error": RATINGS_UNAVAILABLE}
            elif reviewer in ratings:
                review["rating"] = {"stars": int(ratings[reviewer]), "color": color}
        reviews.append(review)
    return {"id": str(product_id), "podname": pod_name, "version": version, "reviews": reviews}
