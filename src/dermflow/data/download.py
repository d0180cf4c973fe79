"""Fetch HAM10000 from its Harvard Dataverse record: pinned, resumable, checksum-verified.

Two steps, so that a finished file never depends on anything but its checksum:

1. ``fetch_manifest`` reads one version of the record (``dataset.version``; ``latest`` is
   resolved to the version published at that moment) through the native API and writes
   ``dataverse_manifest.json`` beside the files: record, version, and each file's id,
   size and checksum. Every later download reads the manifest, not the server's current
   listing, so a version published later is never mixed in until the config asks for it.
   A manifest that already pins the same record version with the same files is left as
   it is, bytes and timestamp: what was downloaded against it stays up to date.
2. ``download_file`` brings one file to a verified copy of the manifest's entry. A file
   already there with the right checksum is kept untouched; one that does not match is
   replaced by the pinned version's file. Each verified file gets its own record,
   ``<name>.provenance.json`` beside it (record, version, file id, checksum, whether it
   was downloaded or found), as the files are fetched by separate jobs at once.

Dataverse details that matter:

* ``HAM10000_metadata`` was ingested as a tabular file. Plain access returns Dataverse's
  tab-separated archival copy; ``?format=original`` returns the uploaded CSV. The published
  checksum of an ingested file is that of the saved original, its size ``originalFileSize``,
  so the original is what is fetched (and the only copy that can be verified), under the
  local name asked for (``dataset.metadata``, ``.csv`` or ``.tab``: readers go by content).
* ``/api/access/datafile/{id}`` may answer 303 with a storage URL (S3 direct download);
  both honour ``Range`` (206), so a cut download resumes where it stopped.

A file lands as ``<name>.part`` with ``<name>.part.json`` beside it (the file id, size and
checksum it is a prefix of) and is renamed into place only after its checksum matches;
a ``.part`` of another file version is discarded, never resumed. Bytes reach the disk
as they arrive (small unbuffered writes), so a kill keeps what arrived. A connection
that drops after sending bytes is resumed at once and does not count as a failed try;
failed tries back off (``Retry-After`` honoured on 429/503), and a read that stalls for
``timeout`` seconds counts as one.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
import urllib3
from tqdm import tqdm

from dermflow import __version__
from dermflow.atomic import write_json
from dermflow.errors import DownloadError
from dermflow.provenance import record_source

DATAVERSE_URL = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
# The record's version this project was written and tested against (Dataverse: V4).
HAM10000_VERSION = "4.0"
MANIFEST = "dataverse_manifest.json"
IMAGE_ZIPS: tuple[str, ...] = ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip")
METADATA = "HAM10000_metadata.csv"
CORE_FILES: tuple[str, ...] = (*IMAGE_ZIPS, METADATA)
EXTERNAL_TEST_FILES: tuple[str, ...] = (
    "ISIC2018_Task3_Test_Images.zip",
    "ISIC2018_Task3_Test_GroundTruth.csv",
)
# Names a server's firewall can tell from a default client's (Harvard's rejects
# python-requests' own User-Agent with 403).
USER_AGENT = (f"dermflow/{__version__} (HAM10000 research pipeline; "
              f"Python/{platform.python_version()})")

# Most bytes per read and write (fewer are written as soon as they arrive).
_CHUNK = 1 << 14
# Seconds before failed try n is 2**(n-1) times this; a module constant so tests can set it.
_RETRY_DELAY_S = 2.0
_MAX_RETRY_AFTER_S = 900.0  # a longer Retry-After is waited this long, then tried
# Dataverse publishes "MD5", "SHA-1", "SHA-256" or "SHA-512".
_HASHES = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
_TABLE_SUFFIXES = (".tab", ".csv")
_MANIFEST_KEYS = ("record", "server", "requested_version", "version", "files")
_LOCAL = ("download the files in a browser, put them in one folder and set "
          "`dataset.source: local` with `dataset.path: <that folder>`")
_HINTS = {
    400: "the server refused the request as sent; if it asks for a guestbook response or "
         "terms of use, open the record's page in a browser, accept them there, then "
         f"{_LOCAL}",
    401: f"the file is restricted to signed-in users: {_LOCAL}",
    403: "Harvard Dataverse's firewall answers 403 to clients it blocks (the default "
         "python-requests User-Agent, some networks or address ranges); dermflow sends "
         f"User-Agent {USER_AGENT!r}. Try again later or from another network, or "
         f"{_LOCAL}",
    404: "check dataset.doi, dataset.version and dataset.dataverse_url (the record's page "
         "lists its versions)",
    429: "the server limits request rates; run again later (finished files are kept)",
}
_HINT_5XX = "the server failed or is down for maintenance; run again later (finished files " \
            "and partial downloads are kept)"

T = TypeVar("T")
log = logging.getLogger(__name__)


class _Transient(Exception):
    """A failure worth retrying: dropped connection, stalled read, 5xx, 429."""

    def __init__(self, message: str, *, progressed: bool = False, wait: float | None = None,
                 unreachable: bool = False, hint: str = "") -> None:
        super().__init__(message)
        self.progressed = progressed  # bytes arrived before it: not a failed try
        self.wait = wait  # the server's Retry-After, in seconds
        self.unreachable = unreachable  # no answer at all: offline, DNS, refused
        self.hint = hint


@dataclass(frozen=True)
class _RemoteFile:
    """One file of the pinned record version, as needed to fetch and verify it."""

    name: str  # local file name
    file_id: int
    url: str
    size: int | None  # bytes of what the URL returns; None if the record does not say
    checksum_type: str
    checksum: str


def session() -> requests.Session:
    """HTTP session with dermflow's User-Agent and no transfer compression (the bytes on the
    wire are the file's, so sizes, Range offsets and checksums agree)."""
    s = requests.Session()
    s.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    return s


def wanted_files(metadata: str = METADATA, external_test: bool = False) -> tuple[str, ...]:
    """Local names of the files a run needs: image zips, metadata (as named), external set."""
    return (*IMAGE_ZIPS, metadata) + (EXTERNAL_TEST_FILES if external_test else ())


def download_ham10000(out_dir: str | Path, *, base_url: str = DATAVERSE_URL,
                      doi: str = HAM10000_DOI, version: str = HAM10000_VERSION,
                      metadata: str = METADATA, external_test: bool = False,
                      timeout: float = 60.0, retries: int = 3) -> list[Path]:
    """The manifest (kept if it is of this record, server and version), then each file."""
    out = Path(out_dir)
    manifest = out / MANIFEST
    files = wanted_files(metadata, external_test)
    if not _manifest_matches(manifest, base_url, doi, version):
        fetch_manifest(manifest, base_url=base_url, doi=doi, version=version,
                       timeout=timeout, retries=retries, files=files)
    return [download_file(out / name, manifest, timeout=timeout, retries=retries, files=files)
            for name in files]


def _manifest_matches(path: Path, base_url: str, doi: str, version: str) -> bool:
    """Whether the manifest at path pins this record on this server at this version."""
    if not path.is_file():
        return False
    manifest = read_manifest(path)
    return (manifest["server"], manifest["record"], manifest["requested_version"]) == (
        base_url.rstrip("/"), doi, version)


def fetch_manifest(path: str | Path, *, base_url: str = DATAVERSE_URL, doi: str = HAM10000_DOI,
                   version: str = HAM10000_VERSION, timeout: float = 60.0, retries: int = 3,
                   files: Sequence[str] | None = None) -> dict[str, Any]:
    """Read one version of the record (native API) and write its manifest to path, unless
    the manifest there already pins that record version with the same files: rewriting it
    would make every file checked against it look out of date. ``files``: the local names
    the run needs, for the error that sends an offline user to fetch them by hand."""
    base = base_url.rstrip("/")
    with session() as s:
        data = _retrying(lambda: _fetch_version(s, base, doi, version, timeout),
                         f"version {version} of {doi}", retries, base, files)
    try:
        number = f"{data['versionNumber']}.{data.get('versionMinorNumber', 0)}"
        entries = [_manifest_entry(entry) for entry in data["files"]]
    except (KeyError, TypeError) as exc:
        raise DownloadError(f"{base} did not answer with a Dataverse dataset version for "
                            f"{doi} (no versionNumber or files[].dataFile): {exc!r}") from exc
    manifest = {"record": doi, "server": base, "requested_version": version,
                "version": number, "files": entries}
    kept = _same_pin(Path(path), manifest)
    if kept is None:
        write_json(manifest, path)
    else:
        manifest = kept
    record_source("dataverse", {k: manifest[k] for k in ("record", "server", "version")})
    log.info("%s: version %s of %s at %s, %d files%s", path, number, doi, base, len(entries),
             "" if kept is None else " (pinned already: kept as it was)")
    return manifest


def _same_pin(path: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest at path if it pins what ``manifest`` does (server, record, version and
    every file's entry; the version asked for may differ, as ``latest`` and ``4.0`` can be
    one version), else None (also when it is missing or unreadable)."""
    if not path.is_file():
        return None
    try:
        kept = read_manifest(path)
    except DownloadError:
        return None

    def pin(m: dict[str, Any]) -> tuple[Any, ...]:
        files = sorted(m["files"], key=lambda e: json.dumps(e, sort_keys=True))
        return m["server"], m["record"], m["version"], files

    return kept if pin(kept) == pin(manifest) else None


def _fetch_version(s: requests.Session, base: str, doi: str, version: str,
                   timeout: float) -> dict[str, Any]:
    """The ``data`` of ``/api/datasets/:persistentId/versions/{version}``."""
    tag = ":latest-published" if version == "latest" else version
    url = f"{base}/api/datasets/:persistentId/versions/{tag}"
    try:
        resp = s.get(url, params={"persistentId": doi}, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(_describe(exc), unreachable=not isinstance(
            exc, requests.ReadTimeout)) from exc
    _check(resp, f"version {version} of {doi}")
    try:
        return dict(resp.json()["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DownloadError(f"{resp.url} did not answer with a Dataverse dataset version "
                            f"(no data): {exc!r}") from exc


def _manifest_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of one files[] entry: what is fetched and how it is checked."""
    data = entry["dataFile"]
    original = bool(data.get("originalFileFormat"))
    size = data.get("originalFileSize") if original else data.get("filesize")
    checksum = data.get("checksum") or ({"type": "MD5", "value": data["md5"]}
                                        if data.get("md5") else None)
    return {"label": entry.get("label") or data.get("filename"), "id": int(data["id"]),
            "filename": data.get("filename"), "original_filename": data.get("originalFileName"),
            "original": original, "size": int(size) if size is not None else None,
            "checksum": checksum}


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest fetch_manifest wrote; DownloadError names it if it is unreadable."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        manifest = {"error": repr(exc)}
    missing = [k for k in _MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise DownloadError(f"cannot read the Dataverse manifest {path} (no {', '.join(missing)}"
                            "); delete it and run again to fetch it afresh")
    return dict(manifest)


def _table_stem(name: str) -> str:
    """Drop a .tab/.csv suffix: ingestion renames foo.csv to foo.tab, uploads may have none."""
    for suffix in _TABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _remote(name: str, manifest: dict[str, Any], path: Path) -> _RemoteFile:
    """The manifest's entry for local file ``name``, matched by label or file name."""
    stem = _table_stem(name)
    for entry in manifest["files"]:
        candidates = (entry.get("label"), entry.get("filename"), entry.get("original_filename"))
        if any(c and _table_stem(c) == stem for c in candidates):
            break
    else:
        labels = ", ".join(sorted(str(e.get("label")) for e in manifest["files"])) or "none"
        raise DownloadError(f"{name} is not in version {manifest['version']} of the Dataverse "
                            f"record {manifest['record']} ({path}; files: {labels})")
    checksum = entry.get("checksum")
    if not checksum:
        raise DownloadError(f"the Dataverse record publishes no checksum for {name}; "
                            "refusing a download that cannot be verified")
    kind = str(checksum["type"])
    if kind.upper().replace("-", "") not in _HASHES:
        raise DownloadError(f"{name}: unsupported checksum type {kind!r} "
                            f"(supported: MD5, SHA-1, SHA-256, SHA-512)")
    url = f"{manifest['server']}/api/access/datafile/{entry['id']}"
    if entry.get("original"):
        url += "?format=original"
    return _RemoteFile(name, int(entry["id"]), url, entry.get("size"), kind,
                       str(checksum["value"]).lower())


def download_file(dest: str | Path, manifest_path: str | Path, *, timeout: float = 60.0,
                  retries: int = 3, files: Sequence[str] | None = None) -> Path:
    """Bring dest to a verified copy of the manifest's file of that name; returns dest.
    A file already verified is left untouched (a new timestamp would make everything read
    from it out of date). ``files``: as for fetch_manifest."""
    dest = Path(dest)
    manifest = read_manifest(manifest_path)
    remote = _remote(dest.name, manifest, Path(manifest_path))
    record_source("dataverse", {k: manifest[k] for k in ("record", "server", "version")})
    if dest.exists():
        if _digest(dest, remote.checksum_type) == remote.checksum:
            _record_file(dest, manifest, remote, downloaded=False)
            log.info("%s: already here, %s verified", dest, remote.checksum_type)
            return dest
        log.warning("%s is not the file of version %s of %s (%s differs); fetching that "
                    "version's file", dest, manifest["version"], manifest["record"],
                    remote.checksum_type)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _claim_part(part, remote)
    with session() as s:
        _retrying(lambda: _stream(s, remote, part, timeout), dest.name, retries,
                  manifest["server"], files)
    actual = _digest(part, remote.checksum_type)
    if actual != remote.checksum:
        part.unlink()
        _sidecar(part).unlink(missing_ok=True)
        raise DownloadError(f"{remote.name}: {remote.checksum_type} checksum mismatch "
                            f"(version {manifest['version']} of {manifest['record']} says "
                            f"{remote.checksum}, got {actual}); refused and deleted, run "
                            "again to fetch it afresh")
    os.replace(part, dest)
    _sidecar(part).unlink(missing_ok=True)
    _record_file(dest, manifest, remote, downloaded=True)
    log.info("%s: downloaded, %s verified", dest, remote.checksum_type)
    return dest


def provenance_path(dest: str | Path) -> Path:
    """Where a downloaded file's own provenance lies: ``<name>.provenance.json`` beside it."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".provenance.json")


def _record_file(dest: Path, manifest: dict[str, Any], remote: _RemoteFile, *,
                 downloaded: bool) -> None:
    """Write what dest was verified as, unless its record already says so (a file found
    again is not news): one record per file, as the files' jobs run at the same time."""
    pinned = {"file": dest.name, "record": manifest["record"], "server": manifest["server"],
              "version": manifest["version"], "file_id": remote.file_id, "size": remote.size,
              "checksum": {"type": remote.checksum_type, "value": remote.checksum}}
    path = provenance_path(dest)
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = None
    if not downloaded and isinstance(kept, dict) and {k: kept.get(k) for k in pinned} == pinned:
        return
    write_json({**pinned, "obtained": "downloaded" if downloaded else "found here, checksum "
                "matched", "verified": dt.datetime.now(dt.timezone.utc).isoformat(
                    timespec="seconds"), "dermflow": __version__}, path)


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _claim_part(part: Path, remote: _RemoteFile) -> None:
    """Keep part only if it is a prefix of this very file; then say so beside it."""
    expected = {"file_id": remote.file_id, "size": remote.size,
                "checksum_type": remote.checksum_type, "checksum": remote.checksum}
    if part.exists():
        try:
            kept = json.loads(_sidecar(part).read_text())
        except (OSError, ValueError):
            kept = None
        if kept != expected:
            log.warning("%s: partial download of another file version (or of unknown "
                        "origin); starting afresh", part)
            part.unlink()
    write_json(expected, _sidecar(part))


def _stream(s: requests.Session, remote: _RemoteFile, part: Path, timeout: float) -> None:
    """Append the rest of remote to part, asking only for the bytes not yet on disk."""
    before = part.stat().st_size if part.exists() else 0
    if remote.size is not None and before > remote.size:
        part.unlink()  # longer than the file: not a prefix of it
        before = 0
    if remote.size is not None and before == remote.size:
        return  # all bytes present; the checksum decides
    headers = {"Range": f"bytes={before}-"} if before else {}
    answered = False
    try:
        with s.get(remote.url, headers=headers, stream=True, timeout=timeout) as resp:
            answered = True
            if resp.status_code == 416 and before:
                return  # nothing past offset: part is whole (or wrong: the checksum says)
            _check(resp, remote.name)
            offset = before
            if resp.status_code != 206:
                offset = 0  # the server ignored Range and sends the whole file
            elif _range_start(resp) != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"answer to Range bytes={offset}- started at "
                                 f"{resp.headers.get('Content-Range')!r}")
            # Whatever has arrived (read1), written unbuffered: a drop or a kill keeps it.
            with open(part, "ab" if offset else "wb", buffering=0) as fh, tqdm(
                    total=remote.size, initial=offset, desc=remote.name, unit="B",
                    unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:
                while chunk := resp.raw.read1(_CHUNK, decode_content=False):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
        got = part.stat().st_size if part.exists() else 0
        # A read that waits past the timeout: requests' ReadTimeout before the answer,
        # urllib3's ReadTimeoutError during the body.
        stalled = isinstance(exc, (requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError))
        message = f"no data for {timeout:g} s (stalled)" if stalled else _describe(exc)
        raise _Transient(f"{message} after {got} bytes", progressed=got > before,
                         unreachable=not answered and not stalled) from exc
    got = part.stat().st_size
    if remote.size is not None and got < remote.size:
        raise _Transient(f"connection ended after {got} of {remote.size} bytes",
                         progressed=got > before)


def _range_start(resp: requests.Response) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def server_message(resp: requests.Response) -> str:
    """What the server said: Dataverse's JSON ``message``, else the start of its text."""
    try:
        body = resp.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except ValueError:
        pass
    text = re.sub(r"<[^>]+>", " ", resp.text or "")
    text = " ".join(text.split())
    return (text[:300] + "...") if len(text) > 300 else (text or resp.reason or "no message")


def _retry_after(resp: requests.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), capped; None if absent."""
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _check(resp: requests.Response, what: str) -> None:
    """Errors say what the server said and what to do; 5xx and 429 are retried."""
    code = resp.status_code
    if code < 400:
        return
    said = f"HTTP {code} from {resp.url}: {server_message(resp)}"
    if code >= 500 or code == 429:
        raise _Transient(said, wait=_retry_after(resp) if code in (429, 503) else None,
                         hint=_HINTS.get(code, _HINT_5XX))
    hint = _HINTS.get(code, f"{_LOCAL} if it persists")
    raise DownloadError(f"{what}: {said}. {hint[0].upper()}{hint[1:]}")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _retrying(fn: Callable[[], T], what: str, retries: int, base: str,
              files: Sequence[str] | None) -> T:
    """Call fn; a try that moved bytes is resumed at once, a failed one retried after a
    backoff (or the server's Retry-After), at most ``retries`` times in a row; ``files``
    for the offline error."""
    failures = 0
    while True:
        try:
            return fn()
        except _Transient as exc:
            if exc.progressed:
                failures = 0
                log.warning("%s: %s; resuming", what, exc)
                continue
            if failures == retries:
                raise _final_error(exc, what, base, failures + 1, files) from exc
            failures += 1
            delay = exc.wait if exc.wait is not None else _RETRY_DELAY_S * 2 ** (failures - 1)
            log.warning("%s: %s; retry %d/%d in %.0f s", what, exc, failures, retries, delay)
            time.sleep(delay)


def _final_error(exc: _Transient, what: str, base: str, tries: int,
                 files: Sequence[str] | None) -> DownloadError:
    """The error once retries are spent; an unreachable host gets the offline ways out,
    with the files to fetch by hand: ``files`` as the run names them or, where the caller
    does not know them, the metadata as the key that names it."""
    if exc.unreachable:
        names = ", ".join(files) if files is not None else (
            f"{', '.join(IMAGE_ZIPS)}, the metadata table `dataset.metadata` names (default "
            f"{METADATA}) and, with `dataset.external_test`, {', '.join(EXTERNAL_TEST_FILES)}")
        host = urlparse(base).netloc or base
        return DownloadError(
            f"could not reach {host} to fetch {what} ({exc}). If this machine is offline, "
            "download the files elsewhere, put them in one folder and set "
            "`dataset.source: local` with `dataset.path: <that folder>`; or run the "
            "embedded demo dataset: `snakemake --profile profiles/demo`. Files: "
            f"{names}")

    hint = f" {exc.hint[0].upper()}{exc.hint[1:]}" if exc.hint else ""
    return DownloadError(f"{what}: {exc} ({tries} tries in a row without progress).{hint}")


def _digest(path: Path, checksum_type: str) -> str:
    """Hex digest of a file in the algorithm Dataverse names (MD5, SHA-1, ...)."""
    h = hashlib.new(_HASHES[checksum_type.upper().replace("-", "")])
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
