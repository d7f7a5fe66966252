"""Finding 2: a request without a valid key is refused from its headers, before any body byte is read."""

from __future__ import annotations

import pytest

from tests.security.conftest import raw_request


@pytest.mark.parametrize(
    "path,kind,headers",
    [
        ("/v1/caption", "application/x-www-form-urlencoded", {}),
        ("/v1/caption", "multipart/form-data; boundary=xyz", {"X-API-Key": "capq_wrong"}),
        ("/v1/jobs", "multipart/form-data; boundary=xyz", {"Authorization": "Bearer capq_guess"}),
        ("/v1/jobs", "application/json", {"X-API-Key": ""}),
        ("/v1/no-such-route", "application/json", {}),
    ],
)
def test_unknown_callers_get_401_before_sending_any_body(api, path, kind, headers):
    # Given an attacker who announces a 200 MB body and sends none of it
    answer = raw_request(api, path, {"Content-Type": kind, **headers})
    # I expect the 401 at once, from the headers alone
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"X-API-Key" in answer


def test_a_big_unauthenticated_body_costs_the_api_no_memory_and_no_disk(api):
    before = api.rss_bytes()
    for path in ("/v1/caption", "/v1/jobs"):
        answer = raw_request(api, path, {"Content-Type": "application/x-www-form-urlencoded"}, send_bytes=50 << 20)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    grown = api.rss_bytes() - before
    assert grown < 20 * 1024 * 1024, f"RSS grew {grown / 2**20:.0f} MiB for refused requests"
    assert list(api.tmpdir.iterdir()) == [], "nothing of a refused request is spooled to disk"


def test_the_key_is_not_taken_from_the_query_string_or_a_basic_auth_header(api, key):
    good = key("mallory")["X-API-Key"]
    with api.client() as c:
        assert c.get(f"/v1/jobs?api_key={good}").status_code == 401
        assert c.get("/v1/jobs", headers={"Authorization": f"Basic {good}"}).status_code == 401
        assert c.get("/v1/jobs", headers={"X-API-Key": good}).status_code == 200
