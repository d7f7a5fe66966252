"""Dataset-scale inputs against real services: webdataset shards, Parquet manifests, s3 prefixes, http(s) URLs."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capq.settings import load_settings
from producer import urls
from producer.errors import BadInput
from producer.queries import results
from producer.submit import submit
from storage.blobs import ImageStore
from storage.jobs import JobStore
from tests.conftest import settings_env
from tests.integration.test_producer_submit import random_jpeg


def make_shard(path, samples: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def item_rows(settings, job_id: str, owner: str) -> list[dict]:
    return list(results(settings, job_id, owner))


def test_webdataset_shards_by_brace_pattern_keep_keys_and_members_as_metadata(psettings, tmp_path):
    # Given two shards of three samples each; each sample's image, .json and .txt share its key; one has no image
    images = {}
    for s in range(2):
        samples = {}
        for i in range(3):
            key = f"s{s}/sample{s}{i:03}"
            images[key] = random_jpeg(300 + s * 10 + i)
            samples[key] = {
                "jpg": images[key],
                "json": json.dumps({"id": s * 10 + i}).encode(),
                "txt": f"reference {key}".encode(),
            }
        if s == 1:
            samples["s1/orphan"] = {"json": b"{}"}
        make_shard(tmp_path / f"{s:05}.tar", samples)
    # If I submit the brace pattern
    result = submit(psettings, [str(tmp_path / "{00000..00001}.tar")], "blip", owner="wendy")
    # I expect every sample's image queued, its key, shard and members as metadata, and the orphan rejected
    assert (result.accepted, result.enqueued) == (6, 6)
    [rej] = result.rejected
    assert rej["file"].endswith("00001.tar#s1/orphan") and "no image member" in rej["reason"]
    rows = {r["meta"]["key"]: r for r in item_rows(psettings, result.job_id, "wendy")}
    assert sorted(rows) == sorted(images)
    for key, row in rows.items():
        assert row["sha256"] == hashlib.sha256(images[key]).hexdigest()
        assert row["meta"]["txt"] == f"reference {key}" and row["meta"]["shard"].endswith(".tar")
        assert row["meta"]["json"]["id"] == int(key[-4]) * 10 + int(key[-3:])


def test_a_missing_shard_is_bad_input_before_any_job(psettings, tmp_path):
    make_shard(tmp_path / "00000.tar", {"a": {"jpg": random_jpeg(1)}})
    with pytest.raises(BadInput, match="no such shard file"):
        submit(psettings, [str(tmp_path / "{00000..00002}.tar")], "blip", owner="wendy", job_id="never-made")
    with pytest.raises(Exception, match="no job"):
        JobStore(psettings).get("never-made")


def test_parquet_manifest_with_path_sha256_and_metadata_columns(psettings, tmp_path):
    # Given an image already submitted (by sha256), one on disk, and one missing
    known = submit(psettings, [_write(tmp_path / "k.jpg", random_jpeg(41))], "blip", owner="pia")
    [known_row] = item_rows(psettings, known.job_id, "pia")
    _write(tmp_path / "imgs" / "a.jpg", random_jpeg(42))
    table = pa.table(
        {
            "path": ["imgs/a.jpg", None, "imgs/missing.jpg"],
            "sha256": [None, known_row["sha256"], None],
            "label": ["cat", "dog", "emu"],
            "score": [0.5, 0.25, 1.0],
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    # If I submit the Parquet manifest
    result = submit(psettings, [tmp_path / "m.parquet"], "blip", owner="pia")
    # I expect the two good rows accepted with their columns as metadata, the missing file rejected by row
    assert result.accepted == 2
    [rej] = result.rejected
    assert rej["file"] == "imgs/missing.jpg" and "row 3" in rej["reason"] and "no such file" in rej["reason"]
    metas = sorted((r["meta"]["label"], r["meta"]["score"]) for r in item_rows(psettings, result.job_id, "pia"))
    assert metas == [("cat", 0.5), ("dog", 0.25)]
    # A Parquet file without any reference column says what it needs
    pq.write_table(pa.table({"file": ["a.jpg"]}), tmp_path / "bad.parquet")
    with pytest.raises(BadInput, match="needs a 'path', 's3', 'url' or 'sha256' column"):
        submit(psettings, [tmp_path / "bad.parquet"], "blip", owner="pia")


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_s3_prefix_expands_to_the_owners_images_only(psettings):
    # Given images, a non-image and a shard under ivy's prefix, and an image under another owner's
    store, bucket = ImageStore(psettings), psettings.s3_bucket
    for i in range(3):
        store.put_key(f"owners/ivy/set/{i}.jpg", random_jpeg(500 + i), "image/jpeg")
    store.put_key("owners/ivy/set/readme.txt", b"not an image")
    store.put_key("owners/jack/set/x.jpg", random_jpeg(510), "image/jpeg")
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
        info = tarfile.TarInfo("k1.png")
        data = random_jpeg(520)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    store.put_key("owners/ivy/shards/00000.tar", shard.getvalue())
    # If ivy submits her prefix, her s3 shard, and jack's prefix
    result = submit(
        psettings,
        [f"s3://{bucket}/owners/ivy/set/", f"s3://{bucket}/owners/ivy/shards/00000.tar", f"s3://{bucket}/owners/jack/"],
        "blip",
        owner="ivy",
    )
    # I expect her three images and her shard's sample, and jack's prefix refused with what is allowed
    assert result.accepted == 4
    [rej] = result.rejected
    assert rej["file"] == f"s3://{bucket}/owners/jack/" and f"s3://{bucket}/owners/ivy/" in rej["reason"]
    names = sorted(r["file_name"] for r in item_rows(psettings, result.job_id, "ivy"))
    assert names == [f"s3://{bucket}/owners/ivy/set/{i}.jpg" for i in range(3)] + [
        f"s3://{bucket}/owners/ivy/shards/00000.tar#k1.png"
    ]


class Server:
    """A real HTTP server on loopback with good, missing, slow, oversized, flaky and redirecting URLs."""

    def __init__(self):
        self.hits: Counter = Counter()
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                counted = path.startswith("/img/")  # quick answers the client never abandons (unlike slow.jpg)
                with server.lock:
                    server.hits[path] += 1
                    server.active += counted
                    server.max_active = max(server.max_active, server.active)
                try:
                    server.answer(self, path)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout under test)
                finally:
                    with server.lock:
                        server.active -= counted

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, h, path):
        def send(code, body=b"", headers=()):
            h.send_response(code)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        if path.startswith("/img/"):
            time.sleep(0.05)
            send(200, random_jpeg(700 + int(path.split("/")[2].split(".")[0])), [("Content-Type", "image/jpeg")])
        elif path == "/slow.jpg":
            time.sleep(1.5)
            send(200, random_jpeg(800))
        elif path == "/big.jpg":
            send(200, b"\xff" * 200_000)
        elif path == "/flaky.jpg":
            send(503) if self.hits[path] == 1 else send(200, random_jpeg(801))
        elif path == "/redirect":
            send(302, headers=[("Location", "/img/1.jpg")])
        elif path == "/to-metadata":
            send(302, headers=[("Location", "http://169.254.169.254/latest/meta-data/")])
        elif path == "/to-loopback":
            send(302, headers=[("Location", f"{self.base}/img/2.jpg")])
        else:
            send(404)

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def http_server():
    server = Server()
    yield server
    server.close()


def fetch_settings(psettings, **extra):
    env = {
        "CAPQ_FETCH_TIMEOUT_S": "0.5",
        "CAPQ_FETCH_RETRIES": "1",
        "CAPQ_FETCH_BACKOFF_S": "0.05",
        "CAPQ_MAX_IMAGE_BYTES": "100000",
        "CAPQ_FETCH_PER_HOST": "2",
    } | extra
    return load_settings({**settings_env(psettings), **env})


def test_urls_are_fetched_with_caps_timeouts_retries_and_per_host_limits(psettings, http_server, tmp_path):
    # Given a manifest of good, missing, slow, oversized, flaky and redirecting URLs on a loopback server
    s = fetch_settings(psettings, CAPQ_FETCH_ALLOW_PRIVATE="true")
    base = http_server.base
    lines = [{"url": f"{base}/img/{i}.jpg", "meta": {"n": i}} for i in range(8)] + [
        {"url": f"{base}/missing.jpg"},
        {"url": f"{base}/slow.jpg"},
        {"url": f"{base}/big.jpg"},
        {"url": f"{base}/flaky.jpg"},
        {"url": f"{base}/redirect"},
        {"url": "ftp://example.com/a.jpg"},
    ]
    (tmp_path / "urls.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    # If I submit it with the private-address guard off (the server is on loopback)
    result = submit(s, [tmp_path / "urls.jsonl"], "blip", owner="uma")
    # I expect each failure recorded with its reason, the rest queued
    reasons = {r["file"].removeprefix(base): r["reason"] for r in result.rejected}
    assert "HTTP 404" in reasons["/missing.jpg"]
    assert "timed out" in reasons["/slow.jpg"] and "after 2 attempt(s)" in reasons["/slow.jpg"]
    assert "over the 100,000-byte cap" in reasons["/big.jpg"]
    assert "only http:// and https://" in reasons["ftp://example.com/a.jpg"]
    assert len(reasons) == 4
    # the flaky URL was retried after its 503; the redirect led to image 1 (already accepted: a duplicate)
    assert (result.accepted, result.duplicates) == (9, 1) and http_server.hits["/flaky.jpg"] == 2
    assert http_server.hits["/slow.jpg"] == 2 and http_server.hits["/img/1.jpg"] == 2
    # never more than CAPQ_FETCH_PER_HOST requests at once to the one host, with 8 upload threads
    assert http_server.max_active == 2
    metas = sorted(r["meta"]["n"] for r in item_rows(s, result.job_id, "uma") if r.get("meta"))
    assert metas == list(range(8))


def test_private_addresses_are_refused_on_the_first_hop_and_on_redirects(psettings, http_server, monkeypatch, tmp_path):
    s = fetch_settings(psettings)  # the guard on, as in production
    base = http_server.base
    # The server's own loopback address is refused before any request reaches it
    with pytest.raises(urls.FetchError, match="refused: 127.0.0.1 resolves to 127.0.0.1.*loopback"):
        urls.fetch_url(f"{base}/img/3.jpg", s)
    assert http_server.hits["/img/3.jpg"] == 0
    # A name that resolves to a private address is refused the same way (localhost -> 127.0.0.1 or ::1)
    with pytest.raises(urls.FetchError, match="refused: localhost"):
        urls.fetch_url(f"http://localhost:{base.rsplit(':', 1)[1]}/img/3.jpg", s)

    # Given a public-looking host: the test's one DNS entry points it at the loopback server, every other
    # name goes through the real guard
    real = urls.resolve
    monkeypatch.setattr(
        urls, "resolve", lambda host, port, allow: "127.0.0.1" if host == "public.test" else real(host, port, allow)
    )
    public = base.replace("127.0.0.1", "public.test")
    assert urls.fetch_url(f"{public}/img/4.jpg", s)[:2] == b"\xff\xd8"
    # Redirects to the cloud metadata address or back to loopback are refused at that hop, never requested
    with pytest.raises(urls.FetchError, match="169.254.169.254.*link-local"):
        urls.fetch_url(f"{public}/to-metadata", s)
    with pytest.raises(urls.FetchError, match="refused: 127.0.0.1"):
        urls.fetch_url(f"{public}/to-loopback", s)
    assert http_server.hits["/img/2.jpg"] == 0
    # Through a submission each refusal is that item's rejection, and the public image goes on
    manifest = tmp_path / "urls.csv"
    manifest.write_text(f"url,label\n{public}/to-metadata,a\n{base}/img/5.jpg,b\n{public}/img/6.jpg,c\n")
    result = submit(s, [manifest], "blip", owner="uma")
    reasons = {r["file"]: r["reason"] for r in result.rejected}
    assert result.accepted == 1 and len(reasons) == 2
    assert "refused: 169.254.169.254" in reasons[f"{public}/to-metadata"]
    assert "refused: 127.0.0.1" in reasons[f"{base}/img/5.jpg"]
