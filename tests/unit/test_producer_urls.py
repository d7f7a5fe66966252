"""URL inputs: which URLs may be fetched and which addresses the SSRF guard refuses (no network needed)."""

from __future__ import annotations

import pytest

from producer.shards import is_shard_spec
from producer.urls import FetchError, check_url, resolve


@pytest.mark.parametrize(
    "url,needle",
    [
        ("ftp://example.com/a.jpg", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("http://user:secret@example.com/a.jpg", "user:password@"),
        ("https://example.com/" + "a" * 2100, "over 2048 characters"),
    ],
)
def test_urls_that_are_never_fetched(url, needle):
    with pytest.raises(FetchError, match=needle):
        check_url(url)


def test_a_plain_https_url_passes():
    assert check_url("https://images.example.com/cat.jpg?x=1") == "https://images.example.com/cat.jpg?x=1"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
    ],
)
def test_private_loopback_link_local_and_reserved_addresses_are_refused(address):
    with pytest.raises(FetchError, match=f"refused: {address}"):
        resolve(address, 80, allow_private=False)
    assert resolve(address, 80, allow_private=True)  # the test/private-network switch


def test_a_public_address_is_returned_to_connect_to():
    assert resolve("93.184.216.34", 443, allow_private=False) == "93.184.216.34"


@pytest.mark.parametrize(
    "spec,shard",
    [
        ("shards/00001.tar", True),
        ("s3://b/owners/a/{00000..00009}.tar", True),
        ("a/{000..009}.jpg", False),
        ("photo.jpg", False),
        ("m.parquet", False),
    ],
)
def test_shard_specs(spec, shard):
    assert is_shard_spec(spec) is shard
