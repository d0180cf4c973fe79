"""download.py against a fake Dataverse on 127.0.0.1: listing, access API, Range, checksums."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from dermflow.data import download
from dermflow.data.download import (
    CORE_FILES,
    EXTERNAL_TEST_FILES,
    HAM10000_DOI,
    download_ham10000,
)
from dermflow.errors import DownloadError

HASHLIB = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}


@dataclass
class FakeFile:
    """A record entry. An ingested table serves ``tab`` plainly and ``data`` as its original."""

    id: int
    label: str
    data: bytes
    checksum_type: str = "MD5"
    tab: bytes | None = None
    published_checksum: str | None = None  # overrides the true one, to fake a bad record
    publish_size: bool = True

    def entry(self) -> dict:
        checksum = self.published_checksum or hashlib.new(
            HASHLIB[self.checksum_type], self.data).hexdigest()
        data_file = {"id": self.id, "filename": self.label, "checksum":
                     {"type": self.checksum_type, "value": checksum}}
        if self.checksum_type == "MD5":
            data_file["md5"] = checksum
        if self.tab is None:
            data_file["filesize"] = len(self.data)
        else:  # as Dataverse reports an ingested CSV
            data_file.update(filesize=len(self.tab), originalFileFormat="text/csv",
                             originalFileSize=len(self.data),
                             originalFileName=self.label.replace(".tab", ".csv"),
                             tabularData=True)
        if not self.publish_size:
            data_file.pop("filesize")
        return {"label": self.label, "restricted": False, "dataFile": data_file}


@dataclass
class Seen:
    """One request the server got."""

    file_id: int | None  # None for the dataset listing
    query: dict[str, list[str]]
    range: str | None
    part_size: int | None = None  # size of the client's <label>.part when the request came


@dataclass
class FakeDataverse:
    url: str
    files: dict[int, FakeFile]
    seen: list[Seen] = field(default_factory=list)
    cut_first_after: dict[int, int] = field(default_factory=dict)  # id -> bytes sent once
    cut_always_after: dict[int, int] = field(default_factory=dict)
    ignore_range: bool = False
    out_dir: Path | None = None  # where the client writes, to record its .part sizes

    def by_label(self, label: str) -> FakeFile:
        return next(f for f in self.files.values() if f.label == label)

    def requests_for(self, label: str) -> list[Seen]:
        file_id = self.by_label(label).id
        return [s for s in self.seen if s.file_id == file_id]


def _random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _record() -> dict[int, FakeFile]:
    csv = b"lesion_id,image_id,dx\nHAM_0000118,ISIC_0027419,bkl\nHAM_0000118,ISIC_0025030,bkl\n"
    truth = b"image,MEL,NV\nISIC_0034524,0.0,1.0\n"
    files = [
        FakeFile(10, "HAM10000_images_part_1.zip", _random_bytes(1, 300_000)),
        FakeFile(11, "HAM10000_images_part_2.zip", _random_bytes(2, 250_000), "SHA-256"),
        FakeFile(12, "HAM10000_metadata.tab", csv, tab=csv.replace(b",", b"\t")[:-1]),
        FakeFile(13, "ISIC2018_Task3_Test_Images.zip", _random_bytes(3, 200_000), "SHA-512"),
        FakeFile(14, "ISIC2018_Task3_Test_GroundTruth.tab", truth, "SHA-1",
                 tab=truth.replace(b",", b"\t")),
        FakeFile(15, "README.txt", b"not needed\n"),
    ]
    return {f.id: f for f in files}


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args: object) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        fake: FakeDataverse = self.server.fake  # type: ignore[attr-defined]
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path.rstrip("/") == "/api/datasets/:persistentId":
            fake.seen.append(Seen(None, query, None))
            if query.get("persistentId") != [HAM10000_DOI]:
                return self._send(404, b'{"status":"ERROR"}')
            body = {"status": "OK", "data": {"latestVersion": {
                "files": [f.entry() for f in fake.files.values()]}}}
            return self._send(200, json.dumps(body).encode())
        prefix = "/api/access/datafile/"
        if not url.path.startswith(prefix) or int(url.path[len(prefix):]) not in fake.files:
            return self._send(404, b"not found")
        file = fake.files[int(url.path[len(prefix):])]
        part = fake.out_dir / f"{file.label}.part" if fake.out_dir else None
        part_size = part.stat().st_size if part and part.exists() else None
        fake.seen.append(Seen(file.id, query, self.headers.get("Range"), part_size))
        original = query.get("format") == ["original"]
        body = file.data if file.tab is None or original else file.tab
        start = 0
        rng = self.headers.get("Range")
        if rng and not fake.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
        rest = body[start:]
        headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if start else {}
        cut = fake.cut_first_after.pop(file.id, None) or fake.cut_always_after.get(file.id)
        if cut is None:
            return self._send(206 if start else 200, rest, headers)
        # Announce the full length, send `cut` bytes, then drop the connection.
        self._send_head(206 if start else 200, len(rest), headers)
        self.wfile.write(rest[:cut])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _send_head(self, status: int, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._send_head(status, len(body), headers or {})
        self.wfile.write(body)


@pytest.fixture
def dataverse(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDataverse]:
    """A fake Dataverse on a free local port, stopped when the test ends."""
    monkeypatch.setattr(download, "_RETRY_DELAY_S", 0.0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    fake = FakeDataverse(f"http://127.0.0.1:{server.server_address[1]}", _record())
    server.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fetch(fake: FakeDataverse, out: Path, **kwargs: object) -> list[Path]:
    return download_ham10000(out, base_url=fake.url, timeout=5.0, **kwargs)  # type: ignore[arg-type]


def test_full_download_lands_verified_files_and_no_part(dataverse, tmp_path):
    paths = fetch(dataverse, tmp_path)

    assert paths == [tmp_path / name for name in CORE_FILES]
    for label in ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip"):
        assert (tmp_path / label).read_bytes() == dataverse.by_label(label).data
    # The ingested table comes back as the uploaded CSV, not Dataverse's .tab copy.
    meta = dataverse.by_label("HAM10000_metadata.tab")
    assert (tmp_path / "HAM10000_metadata.csv").read_bytes() == meta.data
    assert dataverse.requests_for("HAM10000_metadata.tab")[0].query == {"format": ["original"]}
    assert dataverse.requests_for("HAM10000_images_part_1.zip")[0].query == {}
    assert not list(tmp_path.glob("*.part"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CORE_FILES)


def test_dropped_connection_resumes_with_range(dataverse, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_CHUNK", 16_384)  # so bytes before the cut reach disk
    label = "HAM10000_images_part_1.zip"
    dataverse.cut_first_after[dataverse.by_label(label).id] = 100_000
    dataverse.out_dir = tmp_path

    fetch(dataverse, tmp_path)

    assert (tmp_path / label).read_bytes() == dataverse.by_label(label).data
    first, second = dataverse.requests_for(label)
    assert first.range is None
    assert 0 < second.part_size <= 100_000
    assert second.range == f"bytes={second.part_size}-"


def test_existing_part_is_resumed_from_its_size(dataverse, tmp_path):
    label = "HAM10000_images_part_2.zip"
    data = dataverse.by_label(label).data
    (tmp_path / f"{label}.part").write_bytes(data[:50_000])

    dataverse.out_dir = tmp_path

    fetch(dataverse, tmp_path)

    assert (tmp_path / label).read_bytes() == data
    assert [(s.range, s.part_size) for s in dataverse.requests_for(label)] == [
        ("bytes=50000-", 50_000)]
    assert not (tmp_path / f"{label}.part").exists()


def test_server_ignoring_range_restarts_from_zero(dataverse, tmp_path):
    label = "HAM10000_images_part_2.zip"
    data = dataverse.by_label(label).data
    (tmp_path / f"{label}.part").write_bytes(data[:50_000])
    dataverse.ignore_range = True

    fetch(dataverse, tmp_path)

    assert (tmp_path / label).read_bytes() == data  # not the 50 kB prefix twice
    assert [s.range for s in dataverse.requests_for(label)] == ["bytes=50000-"]


def test_complete_part_is_verified_without_a_request(dataverse, tmp_path):
    label = "HAM10000_images_part_1.zip"
    (tmp_path / f"{label}.part").write_bytes(dataverse.by_label(label).data)

    fetch(dataverse, tmp_path)

    assert dataverse.requests_for(label) == []
    assert (tmp_path / label).read_bytes() == dataverse.by_label(label).data


def test_complete_part_of_unknown_size_ends_on_416(dataverse, tmp_path):
    label = "HAM10000_images_part_1.zip"
    file = dataverse.by_label(label)
    file.publish_size = False
    (tmp_path / f"{label}.part").write_bytes(file.data)

    fetch(dataverse, tmp_path)

    assert [s.range for s in dataverse.requests_for(label)] == [f"bytes={len(file.data)}-"]
    assert (tmp_path / label).read_bytes() == file.data


def test_checksum_mismatch_raises_and_keeps_nothing(dataverse, tmp_path):
    label = "HAM10000_images_part_2.zip"
    dataverse.by_label(label).published_checksum = "0" * 64

    with pytest.raises(DownloadError, match=label) as err:
        fetch(dataverse, tmp_path)

    assert "0" * 64 in str(err.value)
    assert hashlib.sha256(dataverse.by_label(label).data).hexdigest() in str(err.value)
    assert not (tmp_path / label).exists()
    assert not (tmp_path / f"{label}.part").exists()


def test_unreachable_host_points_to_local_source(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_RETRY_DELAY_S", 0.0)
    with socket.socket() as sock:  # a port that was free a moment ago and now refuses
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(DownloadError) as err:
        download_ham10000(tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=2.0,
                          retries=1)

    message = str(err.value)
    assert "could not reach" in message
    assert "dataset.source: local" in message
    assert "HAM10000_metadata.csv" in message


def test_retries_are_bounded(dataverse, tmp_path):
    label = "HAM10000_images_part_1.zip"
    dataverse.cut_always_after[dataverse.by_label(label).id] = 1_000

    with pytest.raises(DownloadError, match=label):
        fetch(dataverse, tmp_path, retries=2)

    assert len(dataverse.requests_for(label)) == 3
    assert not (tmp_path / label).exists()


def test_external_test_files_only_when_asked(dataverse, tmp_path):
    fetch(dataverse, tmp_path / "plain")
    assert not any((tmp_path / "plain" / name).exists() for name in EXTERNAL_TEST_FILES)
    assert dataverse.requests_for("ISIC2018_Task3_Test_Images.zip") == []

    paths = fetch(dataverse, tmp_path / "ext", external_test=True)

    assert [p.name for p in paths] == list(CORE_FILES + EXTERNAL_TEST_FILES)
    images = dataverse.by_label("ISIC2018_Task3_Test_Images.zip").data
    truth = dataverse.by_label("ISIC2018_Task3_Test_GroundTruth.tab").data
    assert (tmp_path / "ext" / "ISIC2018_Task3_Test_Images.zip").read_bytes() == images
    assert (tmp_path / "ext" / "ISIC2018_Task3_Test_GroundTruth.csv").read_bytes() == truth


def test_complete_file_is_not_fetched_again(dataverse, tmp_path):
    fetch(dataverse, tmp_path)
    dataverse.seen.clear()

    fetch(dataverse, tmp_path)

    assert [s.file_id for s in dataverse.seen] == [None]  # only the listing


def test_file_missing_from_record_is_named(dataverse, tmp_path):
    del dataverse.files[dataverse.by_label("HAM10000_images_part_2.zip").id]

    with pytest.raises(DownloadError, match="HAM10000_images_part_2.zip"):
        fetch(dataverse, tmp_path)
