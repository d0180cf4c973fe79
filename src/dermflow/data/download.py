"""Fetch HAM10000 from its Harvard Dataverse record, resumably and checksum-verified.

The record is read through the Dataverse native API (the file listing, with sizes and
checksums) and files come through the Data Access API. Two Dataverse details matter:

* ``HAM10000_metadata`` was ingested as a tabular file. Plain access returns Dataverse's
  tab-separated archival copy; ``?format=original`` returns the uploaded CSV. The checksum
  published for an ingested file is the checksum of that saved original, and its size is
  ``originalFileSize`` (``filesize`` is the size of the archival copy).
* Range requests on ``/api/access/datafile/{id}`` get 206 answers (Dataverse >= 5.7; S3
  direct-download redirects honour Range too), so a cut download resumes where it stopped.

Each file lands as ``<name>.part`` and is renamed into place only after its checksum matches,
so a finished name always means a verified file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
from tqdm import tqdm

from dermflow import __version__
from dermflow.errors import DownloadError

DATAVERSE_URL = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
CORE_FILES: tuple[str, ...] = (
    "HAM10000_images_part_1.zip",
    "HAM10000_images_part_2.zip",
    "HAM10000_metadata.csv",
)
EXTERNAL_TEST_FILES: tuple[str, ...] = (
    "ISIC2018_Task3_Test_Images.zip",
    "ISIC2018_Task3_Test_GroundTruth.csv",
)

_CHUNK = 1 << 20
# Seconds before retry n is 2**(n-1) times this; a module constant so tests can set it to 0.
_RETRY_DELAY_S = 2.0
# Dataverse publishes "MD5", "SHA-1", "SHA-256" or "SHA-512".
_HASHES = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
_TABLE_SUFFIXES = (".tab", ".csv")

T = TypeVar("T")
log = logging.getLogger(__name__)


class _Transient(Exception):
    """A failure worth retrying: short body, server hiccup, broken Range answer."""


@dataclass(frozen=True)
class _RemoteFile:
    """One file of the record, as needed to fetch and verify it."""

    name: str  # local file name
    url: str
    size: int | None  # bytes of what the URL returns; None if the record does not say
    checksum_type: str
    checksum: str


def download_ham10000(out_dir: str | Path, *, base_url: str = DATAVERSE_URL,
                      doi: str = HAM10000_DOI, external_test: bool = False,
                      timeout: float = 60.0, retries: int = 3) -> list[Path]:
    """Fetch the record's listing, then each needed file into out_dir; returns local paths."""
    names = CORE_FILES + (EXTERNAL_TEST_FILES if external_test else ())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = base_url.rstrip("/")
    with requests.Session() as session:
        session.headers["User-Agent"] = f"dermflow/{__version__}"
        listing = _retrying(lambda: _fetch_listing(session, base, doi, timeout),
                            f"the file listing of {doi}", base, names, retries)
        remotes = [_find(listing, name, base, doi) for name in names]
        paths = []
        for remote in remotes:
            dest = out / remote.name
            _download(session, remote, dest, base, names, timeout, retries)
            paths.append(dest)
    return paths


def _fetch_listing(session: requests.Session, base: str, doi: str,
                   timeout: float) -> list[dict[str, Any]]:
    """The files[] of the record's latest published version (native API)."""
    resp = session.get(f"{base}/api/datasets/:persistentId/", params={"persistentId": doi},
                       timeout=timeout)
    _raise_for_status(resp, f"the file listing of {doi}")
    try:
        return list(resp.json()["data"]["latestVersion"]["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DownloadError(f"{resp.url} did not answer with a Dataverse dataset record "
                            f"(no data.latestVersion.files): {exc}") from exc


def _table_stem(name: str) -> str:
    """Drop a .tab/.csv suffix: ingestion renames foo.csv to foo.tab, uploads may have none."""
    for suffix in _TABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _find(listing: list[dict[str, Any]], name: str, base: str, doi: str) -> _RemoteFile:
    """The record entry for local file ``name``, matched by label or file name."""
    stem = _table_stem(name)
    for entry in listing:
        data = entry.get("dataFile", {})
        candidates = (entry.get("label"), data.get("filename"), data.get("originalFileName"))
        if any(c and _table_stem(c) == stem for c in candidates):
            return _remote(name, data, base)
    labels = ", ".join(sorted(str(e.get("label")) for e in listing)) or "none"
    raise DownloadError(f"{name} is not in the Dataverse record {doi} at {base} "
                        f"(files listed: {labels})")


def _remote(name: str, data: dict[str, Any], base: str) -> _RemoteFile:
    """Download URL, size and checksum; ingested tables are fetched as their original."""
    url = f"{base}/api/access/datafile/{data['id']}"
    ingested = bool(data.get("originalFileFormat"))
    size = data.get("originalFileSize") if ingested else data.get("filesize")
    if ingested:
        url += "?format=original"
    checksum = data.get("checksum") or ({"type": "MD5", "value": data["md5"]}
                                        if data.get("md5") else None)
    if not checksum:
        raise DownloadError(f"the Dataverse record publishes no checksum for {name}; "
                            "refusing a download that cannot be verified")
    kind = str(checksum["type"])
    if kind.upper().replace("-", "") not in _HASHES:
        raise DownloadError(f"{name}: unsupported checksum type {kind!r} "
                            f"(supported: MD5, SHA-1, SHA-256, SHA-512)")
    return _RemoteFile(name, url, int(size) if size is not None else None, kind,
                       str(checksum["value"]).lower())


def _download(session: requests.Session, remote: _RemoteFile, dest: Path, base: str,
              names: tuple[str, ...], timeout: float, retries: int) -> None:
    """Bring dest to a verified copy of remote, resuming from dest.part if present."""
    if dest.exists() and _digest(dest, remote.checksum_type) == remote.checksum:
        log.info("%s: already here, checksum verified", dest)
        return
    part = dest.with_name(dest.name + ".part")
    _retrying(lambda: _stream(session, remote, part, timeout), remote.name, base, names,
              retries)
    actual = _digest(part, remote.checksum_type)
    if actual != remote.checksum:
        part.unlink()
        raise DownloadError(f"{remote.name}: {remote.checksum_type} checksum mismatch "
                            f"(expected {remote.checksum}, got {actual}); the downloaded "
                            "copy was deleted, run again to fetch it afresh")
    os.replace(part, dest)
    log.info("%s: downloaded, %s verified", dest, remote.checksum_type)


def _stream(session: requests.Session, remote: _RemoteFile, part: Path,
            timeout: float) -> None:
    """Append the rest of remote to part, asking only for the bytes not yet on disk."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset > remote.size:
        offset = 0  # longer than the file: not a prefix of it
    if remote.size is not None and offset == remote.size:
        return  # all bytes present; the checksum decides
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(remote.url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416 and offset:
            return  # nothing past offset: part is whole (or wrong, which the checksum catches)
        _raise_for_status(resp, remote.name)
        if resp.status_code != 206:
            offset = 0  # server ignored Range and sent the whole file
        elif _range_start(resp) != offset:
            part.unlink(missing_ok=True)
            raise _Transient(f"answer to Range bytes={offset}- started at "
                             f"{resp.headers.get('Content-Range')!r}")
        with open(part, "ab" if offset else "wb") as fh, tqdm(
                total=remote.size, initial=offset, desc=remote.name, unit="B",
                unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:
            for chunk in resp.iter_content(chunk_size=_CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if remote.size is not None and got < remote.size:
        raise _Transient(f"connection ended after {got} of {remote.size} bytes")


def _range_start(resp: requests.Response) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _raise_for_status(resp: requests.Response, what: str) -> None:
    """Server errors are retried; client errors are final and say what to do."""
    if resp.status_code >= 500 or resp.status_code == 429:
        raise _Transient(f"HTTP {resp.status_code} from {resp.url}")
    if resp.status_code in (401, 403):
        raise DownloadError(f"{what}: the server refused access (HTTP {resp.status_code}) at "
                            f"{resp.url}; the file may need its terms accepted in a browser. "
                            "Download it by hand and use dataset.source: local")
    if resp.status_code >= 400:
        raise DownloadError(f"{what}: HTTP {resp.status_code} from {resp.url}")


def _retrying(fn: Callable[[], T], what: str, base: str, names: tuple[str, ...],
              retries: int) -> T:
    """Call fn, retrying network hiccups up to ``retries`` times with exponential backoff."""
    attempt = 0
    while True:
        try:
            return fn()
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError, _Transient) as exc:
            if attempt == retries:
                raise _final_error(exc, what, base, names, retries) from exc
            attempt += 1
            print(f"dermflow: {what}: {exc}; retry {attempt}/{retries}", file=sys.stderr)
            time.sleep(_RETRY_DELAY_S * 2 ** (attempt - 1))


def _final_error(exc: Exception, what: str, base: str, names: tuple[str, ...],
                 retries: int) -> DownloadError:
    """The error to show once retries are spent; unreachable hosts get the offline way out."""
    if isinstance(exc, requests.ConnectionError):
        host = urlparse(base).netloc or base
        return DownloadError(
            f"could not reach {host} to fetch {what} ({exc}). If this machine is offline, "
            "download the files elsewhere, put them in one folder and set "
            "`dataset.source: local` with `dataset.path: <that folder>` in the config. "
            f"Expected files: {', '.join(names)}")
    return DownloadError(f"{what}: download failed after {retries + 1} attempts: {exc}")


def _digest(path: Path, checksum_type: str) -> str:
    """Hex digest of a file in the algorithm Dataverse names (MD5, SHA-1, ...)."""
    h = hashlib.new(_HASHES[checksum_type.upper().replace("-", "")])
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()
