from __future__ import annotations

import pytest

from minimesh.security.identity import Identity, IdentityError, from_service_account_username, parse


def test_uri_and_principal() -> None:
    i = Identity("default", "bookinfo-details")
    assert i.uri == "spiffe://cluster.local/ns/default/sa/bookinfo-details"
    assert i.principal == "cluster.local/ns/default/sa/bookinfo-details"
    assert parse(i.uri) == i


@pytest.mark.parametrize("uri, why", [
    ("cluster.local/ns/a/sa/b", "must start with spiffe://"),
    ("spiffe://cluster.local/ns/a", "want spiffe://"),
    ("spiffe://cluster.local/sa/b/ns/a", "want spiffe://"),
    ("spiffe://cluster.local/ns/A_B/sa/b", "namespace 'A_B'"),
    ("spiffe://Cluster.Local/ns/a/sa/b", "trust domain"),
])
def test_bad_ids_say_what_is_wrong(uri: str, why: str) -> None:
    with pytest.raises(IdentityError, match=why):
        parse(uri)


def test_token_review_usernames() -> None:
    assert from_service_account_username("system:serviceaccount:default:sleep") == Identity("default", "sleep")
    for bad in ("kubernetes-admin", "system:serviceaccount:default", "system:node:n1", "system:serviceaccount:a:b:c"):
        with pytest.raises(IdentityError, match="not a service account"):
            from_service_account_username(bad)
