"""The productpage HTML (pure: data in, page out). Everything user-visible is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from minimesh.apps.bookinfo import data

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
header { background: #2a3f54; color: #fff; padding: .6em 1em; display: flex; justify-content: space-between; }
header a, header button { color: #fff; }
.block { border: 1px solid #ccc; border-radius: 4px; padding: 1em; margin: 1em 0; }
.error { color: #a94442; background: #f2dede; }
.stars-black { color: #000; } .stars-red { color: #d00; }
dt { font-weight: bold; float: left; clear: left; width: 9em; } dd { margin-left: 10em; }
blockquote { margin: .5em 0 1em 0; } small { color: #666; }
"""


def stars(rating: dict[str, Any]) -> str:
    """★ for each star out of five, coloured by the reviews version; the error text otherwise."""
    if "error" in rating:
        return f'<p class="error rating-error">{escape(str(rating["error"]))}</p>'
    count = max(0, min(5, int(rating.get("stars", 0))))
    color = escape(str(rating.get("color", "black")))
    return f'<span class="stars stars-{color}" title="{count} stars">{"★" * count}{"☆" * (5 - count)}</span>'


def _error_block(kind: str, title: str, text: str, cause: str | None) -> str:
    why = f'<p><small class="cause">{escape(cause)}</small></p>' if cause else ""
    return f'<div class="block {kind} error" id="{kind}"><h4>{title}</h4><p>{escape(text)}</p>{why}</div>'


def details_block(details: dict[str, Any] | None, cause: str | None) -> str:
    """The details block; when the call failed, Istio's apology plus why (e.g. `HTTP 403`)."""
    if details is None:
        return _error_block("details", "Error fetching product details!", data.DETAILS_UNAVAILABLE, cause)
    rows = "".join(
        f"<dt>{escape(label)}:</dt><dd>{escape(str(details.get(key, '')))}</dd>"
        for label, key in (
            ("Author", "author"),
            ("Year", "year"),
            ("Type", "type"),
            ("Pages", "pages"),
            ("Publisher", "publisher"),
            ("Language", "language"),
            ("ISBN-10", "ISBN-10"),
            ("ISBN-13", "ISBN-13"),
        )
    )
    return f'<div class="block details" id="details"><h4>Book Details</h4><dl>{rows}</dl></div>'


def reviews_block(reviews: dict[str, Any] | None, cause: str | None) -> str:
    if reviews is None:
        return _error_block("reviews", "Error fetching product reviews!", data.REVIEWS_UNAVAILABLE, cause)
    items = []
    for review in reviews.get("reviews", []):
        rating = review.get("rating")
        items.append(
            "<blockquote>"
            f"<p>{escape(str(review.get('text', '')))}</p>"
            f"<small>{escape(str(review.get('reviewer', '')))}</small>"
            f"{stars(rating) if isinstance(rating, dict) else ''}"
            "</blockquote>"
        )
    served_by = escape(f"{reviews.get('podname', '')} ({reviews.get('version', '')})".strip())
    return (
        f'<div class="block reviews" id="reviews"><h4>Book Reviews</h4>{"".join(items)}'
        f'<p><small>Reviews served by: <span class="reviews-served-by">{served_by}</span></small></p></div>'
    )


def product_page(
    product: dict[str, Any],
    *,
    details: dict[str, Any] | None,
    details_error: str | None,
    reviews: dict[str, Any] | None,
    reviews_error: str | None,
    user: str | None,
) -> str:
    """The whole page: header with sign-in state, the book, the details and reviews blocks."""
    if user:
        session = f'<span>{escape(user)}</span> <a href="/logout">sign out</a>'
    else:
        session = (
            '<form method="post" action="/login" style="display:inline">'
            '<input name="username" placeholder="user" size="8"> <button type="submit">Sign in</button></form>'
        )
    # descriptionHtml is our own trusted sample data (it carries a link), so it is not escaped.
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Simple Bookstore App</title>"
        f"<style>{_STYLE}</style></head><body>"
        f'<header><span>BookInfo Sample (minimesh)</span><span class="session">{session}</span></header>'
        f'<h2 id="title">{escape(str(product["title"]))}</h2>'
        f'<p class="summary">{product["descriptionHtml"]}</p>'
        f"{details_block(details, details_error)}"
        f"{reviews_block(reviews, reviews_error)}"
        "</body></html>"
    )


def index_page() -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Simple Bookstore App</title></head><body>"
        "<h3>Hello! This is a simple bookstore application consisting of four services.</h3>"
        '<p><a href="/productpage?u=normal">Normal user</a> | <a href="/productpage?u=test">Test user</a></p>'
        "<p>productpage &rarr; details, productpage &rarr; reviews (v1, v2, v3) &rarr; ratings</p>"
        "</body></html>"
    )
