"""A stand-in Dataverse on 127.0.0.1 that answers as the documented API does, for tests.

Two local hosts: the Dataverse installation (native and data access APIs) and a "storage"
host its access URLs redirect to, as an S3 store with direct download does. What each
answer looks like follows the Dataverse Guides:

* Native API, "Get JSON Representation of a Dataset" and "Get Version of a Dataset":
  ``GET /api/datasets/:persistentId/?persistentId=PID`` answers
  ``{"status": "OK", "data": {..., "latestVersion": {..., "files": [...]}}}``;
  ``GET /api/datasets/:persistentId/versions/$VERSION?persistentId=PID`` answers one
  version, ``$VERSION`` being ``:latest``, ``:latest-published``, ``x.y`` or ``x``
  (https://guides.dataverse.org/en/latest/api/native-api.html#get-json-representation-of-a-dataset,
  https://guides.dataverse.org/en/latest/api/native-api.html#get-version-of-a-dataset,
  https://guides.dataverse.org/en/latest/api/dataaccess.html, "version identifiers").
  Each ``files[]`` entry is ``{"label", "restricted", "dataFile": {"id", "filename",
  "filesize", "md5", "checksum": {"type", "value"}, ...}}``; an ingested (tabular) file is
  listed under its ``.tab`` name with ``filesize`` the archival copy's and
  ``originalFileFormat``, ``originalFileSize``, ``originalFileName`` describing the upload,
  whose checksum is the one published.
* Data Access API, "Basic File Access": ``GET /api/access/datafile/$id`` returns the file,
  the tab-separated archival copy for an ingested one, ``?format=original`` its "Saved
  Original"; the ``Range`` header asks for one byte range (206; ``bytes=N-`` all from N)
  (https://guides.dataverse.org/en/latest/api/dataaccess.html#basic-file-access).
* S3 direct download (``dataverse.files.<id>.download-redirect``): the access URL answers
  with a redirect to a presigned storage URL, sent here as 303 See Other, and the storage
  honours ``Range`` (206 with ``Content-Range``; 416 with ``Content-Range: bytes */SIZE``
  for a range past the end)
  (https://guides.dataverse.org/en/latest/installation/config.html#s3-storage-options,
  https://guides.dataverse.org/en/latest/developers/big-data-support.html).
* Errors come in the API's envelope ``{"status": "ERROR", "message": "..."}``
  (https://guides.dataverse.org/en/latest/api/intro.html); a dataset with a guestbook
  refuses a download without a response with 400 and "You may not download this file
  without the required Guestbook response" (IQSS/dataverse pull request 12110, issue 12535).
  Faults (``Fault``) are queued per file: a status with a body and headers (429 with
  ``Retry-After``, 403 from a firewall), a stream cut after N bytes, a stream throttled to
  a rate, a stream that stalls.

The stand-in counts the body bytes it serves per file (``served``) and records each
request (``seen``); every wait is bounded and ends when it stops, so a test that forgets
it cannot hang.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

DOI = "doi:10.7910/DVN/DBW86T"
HASHLIB = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}
_PIECE = 8192  # bytes per write of a throttled or stalling stream
_MAX_WAIT_S = 30.0  # no stall or throttle lasts longer, whatever a test asks


def tab_copy(csv_bytes: bytes) -> bytes:
    """Dataverse's archival copy of an ingested CSV: tab-separated, text quoted."""
    rows = list(csv.reader(io.StringIO(csv_bytes.decode())))
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")

    def typed(value: str) -> str | float:
        try:
            return float(value)
        except ValueError:
            return value

    writer.writerow(rows[0])
    writer.writerows([[typed(v) for v in row] for row in rows[1:]])
    return out.getvalue().encode()


@dataclass
class StoredFile:
    """A file of the record. An ingested table is listed as ``.tab``; ``data`` is its upload."""

    id: int
    label: str
    data: bytes
    checksum_type: str = "MD5"
    ingested: bool = False
    published_checksum: str | None = None  # overrides the true one, to fake a bad record
    publish_size: bool = True  # False: the listing leaves the sizes out

    def body(self, original: bool) -> bytes:
        """What the access API returns: the archival copy, or the upload when asked."""
        return tab_copy(self.data) if self.ingested and not original else self.data

    def entry(self) -> dict[str, Any]:
        """The file's ``files[]`` element of a dataset version."""
        checksum = self.published_checksum or hashlib.new(
            HASHLIB[self.checksum_type], self.data).hexdigest()
        data_file: dict[str, Any] = {
            "id": self.id, "persistentId": "", "filename": self.label,
            "contentType": "application/zip", "filesize": len(self.body(False)),
            "description": "", "storageIdentifier": f"s3://dvn-cloud:{self.id:012x}",
            "rootDataFileId": -1, "checksum": {"type": self.checksum_type, "value": checksum},
            "creationDate": "2018-06-05"}
        if self.checksum_type == "MD5":
            data_file["md5"] = checksum
        if not self.publish_size:
            del data_file["filesize"]
        if self.ingested:
            data_file.update(contentType="text/tab-separated-values", tabularData=True,
                             originalFileFormat="text/csv",
                             originalFormatLabel="Comma Separated Values",
                             originalFileName=self.label.removesuffix(".tab") + ".csv",
                             **({"originalFileSize": len(self.data)} if self.publish_size
                                else {}))
        return {"label": self.label, "restricted": False, "version": 1, "dataFile": data_file}


@dataclass
class Fault:
    """What the next access request for a file gets instead of a plain answer."""

    status: int | None = None  # answer this status with body and headers
    body: Any = b""  # bytes, text, or a dict sent as JSON
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # send this many body bytes, then drop the connection
    stall_after: int | None = None  # send this many, then nothing for stall_s
    stall_s: float = 5.0
    rate: float | None = None  # bytes per second


@dataclass
class Seen:
    """One request the stand-in got."""

    host: str  # "api" or "storage"
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    label: str | None = None  # the file asked for, if any
    status: int = 0


class Dataverse:
    """The stand-in: ``versions`` maps "x.y" to that version's files, oldest first."""

    def __init__(self, versions: dict[str, list[StoredFile]], *, doi: str = DOI,
                 redirect: bool = True) -> None:
        self.versions = dict(versions)
        self.doi = doi
        self.redirect = redirect
        self.honour_range = True  # False: answer 200 with the whole file, as old servers did
        self.served: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.stopping = threading.Event()
        self.active = 0  # requests being answered
        self._lock = threading.Lock()
        self._servers = [self._server("api"), self._server("storage")]
        self.url, self.storage_url = (f"http://127.0.0.1:{s.server_address[1]}"
                                      for s in self._servers)
        self._threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                                          daemon=True) for s in self._servers]

    def _server(self, host: str) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.standin, server.host = self, host  # type: ignore[attr-defined]
        return server

    def __enter__(self) -> Dataverse:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # What tests set and read.
    def fail(self, label: str, *faults: Fault) -> None:
        """Queue faults for the next requests for the file named ``label``."""
        self.faults[label].extend(faults)

    def publish(self, version: str, files: list[StoredFile]) -> None:
        """A new version of the record, now the latest."""
        self.versions[version] = files

    def file(self, label: str, version: str | None = None) -> StoredFile:
        """The file named label in a version (default: the latest)."""
        files = self.versions[version or self._latest()]
        return next(f for f in files if f.label == label)

    def requests_for(self, label: str) -> list[Seen]:
        return [s for s in self.seen if s.label == label]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no request is being answered (a killed client's stream has ended)."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)

    def reset_counts(self) -> None:
        """Forget what was served and seen, once in-flight answers have ended."""
        self.wait_idle()
        with self._lock:
            self.served.clear()
            self.seen.clear()

    # Internals the handler uses.
    def _latest(self) -> str:
        return max(self.versions, key=lambda v: tuple(int(p) for p in v.split(".")))

    def _version(self, tag: str) -> str | None:
        if tag in (":latest", ":latest-published"):
            return self._latest()
        wanted = tag if "." in tag else f"{tag}.0"
        return wanted if wanted in self.versions else None

    def _version_json(self, version: str) -> dict[str, Any]:
        major, minor = (int(p) for p in version.split("."))
        return {"id": 100 + len(self.versions), "datasetId": 1,
                "datasetPersistentId": self.doi, "storageIdentifier": "s3://10.7910/DVN/DBW86T",
                "versionNumber": major, "versionMinorNumber": minor,
                "versionState": "RELEASED", "latestVersionPublishingState": "RELEASED",
                "files": [f.entry() for f in self.versions[version]]}

    def _by_id(self, file_id: int) -> StoredFile | None:
        return next((f for files in self.versions.values() for f in files if f.id == file_id),
                    None)


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output quiet
        pass

    @property
    def standin(self) -> Dataverse:
        return self.server.standin  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        seen = Seen(self.server.host, url.path, parse_qs(url.query),  # type: ignore[attr-defined]
                    dict(self.headers.items()))
        with self.standin._lock:
            self.standin.seen.append(seen)
            self.standin.active += 1
        try:
            if self.server.host == "storage":  # type: ignore[attr-defined]
                return self._storage(url.path, seen)
            if url.path.startswith("/api/datasets/:persistentId"):
                return self._dataset(url.path, seen)
            if url.path.startswith("/api/access/datafile/"):
                return self._access(url.path, seen)
            return self._send(seen, 404, {"status": "ERROR", "message": "API endpoint does "
                                          "not exist on this server."})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with self.standin._lock:
                self.standin.active -= 1

    def _dataset(self, path: str, seen: Seen) -> None:
        """Native API: the dataset with its latest version, or one version."""
        dv = self.standin
        if seen.query.get("persistentId") != [dv.doi]:
            pid = seen.query.get("persistentId", [""])[0]
            return self._send(seen, 404, {"status": "ERROR", "message": f"Dataset with "
                                          f"Persistent ID {pid} not found."})
        rest = path.removeprefix("/api/datasets/:persistentId").strip("/")
        if not rest:
            body = {"id": 1, "identifier": "DVN/DBW86T", "persistentUrl":
                    "https://doi.org/10.7910/DVN/DBW86T", "protocol": "doi",
                    "authority": "10.7910", "publisher": "Harvard Dataverse",
                    "latestVersion": dv._version_json(dv._latest())}
            return self._send(seen, 200, {"status": "OK", "data": body})
        tag = rest.removeprefix("versions/")
        version = dv._version(tag) if rest.startswith("versions/") else None
        if version is None:
            return self._send(seen, 404, {"status": "ERROR", "message": f"Dataset version "
                                          f"{tag} of dataset 1 not found"})
        return self._send(seen, 200, {"status": "OK", "data": dv._version_json(version)})

    def _access(self, path: str, seen: Seen) -> None:
        """Data Access API: a fault, a 303 to storage, or the file itself."""
        try:
            file = self.standin._by_id(int(path.removeprefix("/api/access/datafile/")))
        except ValueError:
            file = None
        if file is None:
            return self._send(seen, 404, {"status": "ERROR", "message": "File not found"})
        seen.label = file.label
        fault = self._fault(file, status_only=self.standin.redirect)
        if fault is not None and fault.status is not None:
            return self._send(seen, fault.status, fault.body, fault.headers)
        original = seen.query.get("format") == ["original"]
        if self.standin.redirect:
            kind = "original" if original else "plain"
            location = f"{self.standin.storage_url}/dvn-cloud/{file.id}/{kind}?X-Amz-Signature=0"
            return self._send(seen, 303, b"", {"Location": location})
        return self._file(file, file.body(original), seen, fault)

    def _storage(self, path: str, seen: Seen) -> None:
        """The storage host: the object a presigned URL names, with Range."""
        parts = path.strip("/").split("/")
        found = len(parts) == 3 and parts[1].isdigit()
        file = self.standin._by_id(int(parts[1])) if found else None
        if file is None:
            return self._send(seen, 404, b"<Error><Code>NoSuchKey</Code></Error>")
        seen.label = file.label
        return self._file(file, file.body(parts[2] == "original"), seen, self._fault(file))

    def _fault(self, file: StoredFile, status_only: bool = False) -> Fault | None:
        """The file's next fault; with status_only, only a status fault is taken here (a
        stream fault waits for the storage host)."""
        queue = self.standin.faults.get(file.label)
        with self.standin._lock:
            if not queue or (status_only and queue[0].status is None):
                return None
            return queue.popleft()

    def _file(self, file: StoredFile, body: bytes, seen: Seen, fault: Fault | None) -> None:
        """The body, or the range asked for, shaped by a stream fault."""
        if fault is not None and fault.status is not None:
            return self._send(seen, fault.status, fault.body, fault.headers)
        start, status, headers = 0, 200, {"Accept-Ranges": "bytes",
                                          "Content-Type": "application/octet-stream"}
        rng = self.headers.get("Range")
        if rng and self.standin.honour_range:
            try:
                first, last = rng.removeprefix("bytes=").split("-")
                start, end = int(first), (int(last) if last else len(body) - 1)
            except ValueError:
                start, end = len(body), 0
            if start >= len(body) or end < start:
                return self._send(seen, 416, b"", {"Content-Range": f"bytes */{len(body)}"})
            total = len(body)
            body = body[start:end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{total}"
        self._stream(file, body, seen, status, headers, fault or Fault())

    def _stream(self, file: StoredFile, body: bytes, seen: Seen, status: int,
                headers: dict[str, str], fault: Fault) -> None:
        seen.status = status
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        stop = self.standin.stopping
        limit = len(body) if fault.cut_after is None else min(fault.cut_after, len(body))
        sent = 0
        deadline = time.monotonic() + _MAX_WAIT_S
        while sent < limit and not stop.is_set():
            paced = fault.rate is not None or fault.stall_after is not None
            piece = body[sent:min(limit, sent + _PIECE) if paced else limit]
            self.wfile.write(piece)
            sent += len(piece)
            with self.standin._lock:
                self.standin.served[file.label] += len(piece)
            if fault.stall_after is not None and sent >= fault.stall_after:
                stop.wait(min(fault.stall_s, _MAX_WAIT_S))
                break
            if fault.rate:
                stop.wait(len(piece) / fault.rate)
            if time.monotonic() > deadline:
                break
        if sent < len(body):  # cut, stalled or stopping: drop the connection
            self.close_connection = True
            self.connection.shutdown(2)

    def _send(self, seen: Seen, status: int, body: Any,
              headers: dict[str, str] | None = None) -> None:
        seen.status = status
        if isinstance(body, dict):
            data, kind = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            data, kind = body.encode(), "text/html; charset=utf-8"
        else:
            data, kind = body, "application/octet-stream"
        self.send_response(status)
        for key, value in {"Content-Type": kind, **(headers or {}),
                           "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def ham10000_record(scale: int = 1) -> list[StoredFile]:
    """Files laid out as the HAM10000 record's, with small random contents
    (``scale`` times 10 kB per zip)."""
    import random

    def noise(seed: int, n: int) -> bytes:
        return random.Random(seed).randbytes(n)

    metadata = (b"lesion_id,image_id,dx,dx_type,age,sex,localization,dataset\n"
                b"HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp,vidir_modern\n"
                b"HAM_0000118,ISIC_0025030,bkl,histo,80.0,male,scalp,vidir_modern\n"
                b"HAM_0002730,ISIC_0026769,bkl,histo,,female,\"lower, extremity\",rosendahl\n")
    truth = (b"lesion_id,image_id,dx,dx_type,age,sex,localization,dataset\n"
             b"HAMTEST_0000000,ISIC_0034524,nv,follow_up,40.0,female,back,vidir_molemax\n")
    return [
        StoredFile(10, "HAM10000_images_part_1.zip", noise(1, 40_000 * scale)),
        StoredFile(11, "HAM10000_images_part_2.zip", noise(2, 30_000 * scale), "SHA-256"),
        StoredFile(12, "HAM10000_metadata.tab", metadata, ingested=True),
        StoredFile(13, "ISIC2018_Task3_Test_Images.zip", noise(3, 20_000 * scale), "SHA-512"),
        StoredFile(14, "ISIC2018_Task3_Test_GroundTruth.tab", truth, "SHA-1", ingested=True),
        StoredFile(15, "HAM10000_segmentations_lesion_tschandl.zip", noise(4, 5_000)),
    ]
