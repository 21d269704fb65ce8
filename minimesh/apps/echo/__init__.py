"""A small, fast HTTP echo server for routing, retry, fault and load tests.

Every request is answered with what the server saw (method, path, headers, peer, pod, version) as JSON.
Query parameters shape the answer: `?status=503` (status code), `?delay=0.2` (seconds before
answering), `?size=1024` (answer with that many bytes instead of the JSON).
"""
