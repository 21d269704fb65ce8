"""bookinfo-lite: Istio's Bookinfo sample reduced to four small aiohttp services.

productpage -> details, productpage -> reviews (v1 | v2 | v3) -> ratings. Every service listens on
port 9080 and calls the others by plain HTTP at their Service names, so a sidecar mesh can intercept,
route, secure and authorise the calls without the apps knowing.
"""

SERVICES = ("productpage", "details", "reviews", "ratings")
PORT = 9080
