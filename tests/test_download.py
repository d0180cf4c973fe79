"""download.py against the stand-in Dataverse (tests/dataverse_standin.py) on 127.0.0.1:
pinned versions, the manifest, resuming, retries, the server's own error messages, and
the workflow's download rules keeping every finished file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow, planned_jobs, snakemake
from dataverse_standin import Dataverse, Fault, StoredFile, ham10000_record, tab_copy

from dermflow.data import download
from dermflow.data.download import (
    CORE_FILES,
    EXTERNAL_TEST_FILES,
    MANIFEST,
    USER_AGENT,
    download_file,
    download_ham10000,
    fetch_manifest,
    read_manifest,
)
from dermflow.data.validate import read_metadata
from dermflow.errors import DownloadError
from dermflow.stage import run_stage

ZIP1, ZIP2, META = CORE_FILES
META_TAB = "HAM10000_metadata.tab"


@pytest.fixture
def dataverse(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dataverse]:
    """The stand-in with the record at version 1.0, stopped when the test ends."""
    monkeypatch.setattr(download, "_RETRY_DELAY_S", 0.0)
    with Dataverse({"1.0": ham10000_record()}) as dv:
        yield dv


def fetch(dv: Dataverse, out: Path, **kwargs: object) -> list[Path]:
    kwargs = {"timeout": 5.0, "version": "1.0", **kwargs}
    return download_ham10000(out, base_url=dv.url, **kwargs)  # type: ignore[arg-type]


def second_version(dv: Dataverse) -> StoredFile:
    """Publish 2.0, whose first image zip is replaced (a new file id, as Dataverse gives)."""
    new = StoredFile(20, ZIP1, b"version 2 " * 5_000)
    dv.publish("2.0", [new if f.label == ZIP1 else f for f in dv.versions["1.0"]])
    return new


def test_download_lands_the_pinned_version_and_its_manifest(dataverse, tmp_path):
    second_version(dataverse)  # the latest, not asked for

    paths = fetch(dataverse, tmp_path)

    assert paths == [tmp_path / name for name in CORE_FILES]
    assert (tmp_path / ZIP1).read_bytes() == dataverse.file(ZIP1, "1.0").data
    assert (tmp_path / ZIP2).read_bytes() == dataverse.file(ZIP2, "1.0").data
    # The ingested table comes back as the uploaded CSV (the one the checksum is of).
    assert (tmp_path / META).read_bytes() == dataverse.file(META_TAB).data
    assert dataverse.requests_for(META_TAB)[0].query == {"format": ["original"]}
    # Through the 303 to storage, with dermflow's User-Agent and no compression, both hosts.
    assert {(s.host, s.status) for s in dataverse.requests_for(ZIP1)} == {
        ("api", 303), ("storage", 200)}
    for seen in dataverse.seen:
        assert seen.headers["User-Agent"] == USER_AGENT
        assert seen.headers["Accept-Encoding"] == "identity"
    manifest = read_manifest(tmp_path / MANIFEST)
    assert (manifest["record"], manifest["version"]) == (dataverse.doi, "1.0")
    entry = next(e for e in manifest["files"] if e["label"] == ZIP2)
    assert (entry["id"], entry["size"]) == (11, 30_000)
    assert entry["checksum"] == {"type": "SHA-256", "value": hashlib.sha256(
        dataverse.file(ZIP2).data).hexdigest()}
    # Each file records what it was verified as, beside it (one record per file, as the
    # workflow fetches them in separate jobs at once).
    for name, stored in ((ZIP1, ZIP1), (ZIP2, ZIP2), (META, META_TAB)):
        record = json.loads((tmp_path / f"{name}.provenance.json").read_text())
        file = dataverse.file(stored, "1.0")
        assert (record["file"], record["version"], record["file_id"]) == (name, "1.0", file.id)
        assert record["checksum"]["value"] == next(
            e for e in manifest["files"] if e["id"] == file.id)["checksum"]["value"]
        assert record["obtained"] == "downloaded"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*CORE_FILES, MANIFEST, *(f"{name}.provenance.json" for name in CORE_FILES)])


def test_the_same_version_asked_again_leaves_manifest_and_files_untouched(dataverse, tmp_path):
    """Asking for the pinned version another way (its latest, the server with a trailing
    slash) or refreshing the manifest leaves it byte for byte and timestamp as it was, and a
    verified file too: nothing read from them looks out of date."""
    fetch(dataverse, tmp_path)
    manifest = tmp_path / MANIFEST
    pinned = manifest.read_bytes()
    for path in tmp_path.iterdir():
        os.utime(path, (1e9, 1e9))  # long ago: any write or touch shows

    fetch_manifest(manifest, base_url=dataverse.url + "/", version="latest", timeout=5.0)
    for name in CORE_FILES:
        download_file(tmp_path / name, manifest)

    assert manifest.read_bytes() == pinned
    assert {p.name: p.stat().st_mtime for p in tmp_path.iterdir()} == {
        p.name: 1e9 for p in tmp_path.iterdir()}
    # A version with other files is written.
    new = second_version(dataverse)
    fetch_manifest(manifest, base_url=dataverse.url, version="2.0", timeout=5.0)
    assert manifest.stat().st_mtime > 1e9
    assert read_manifest(manifest)["version"] == "2.0"
    download_file(tmp_path / ZIP1, manifest)
    record = json.loads((tmp_path / f"{ZIP1}.provenance.json").read_text())
    assert (record["version"], record["file_id"]) == ("2.0", new.id)


def test_each_download_stage_records_only_its_own_source(dataverse, tmp_path):
    """Several stages in one process (the CLI, a test): each one's provenance.json names what
    it read, never what an earlier one did."""
    fetch(dataverse, tmp_path / "raw")

    def stage(rule: str, output: Path) -> SimpleNamespace:
        return SimpleNamespace(rule=rule, log=[str(tmp_path / f"{rule}.log")],
                               output=[str(output)], params={}, config={})

    with run_stage(stage("download_file", tmp_path / "raw" / ZIP1)):
        download_file(tmp_path / "raw" / ZIP1, tmp_path / "raw" / MANIFEST)
    sources = json.loads((tmp_path / "raw/provenance.json").read_text())["sources"]
    assert sources == {"dataverse": {"record": dataverse.doi, "server": dataverse.url,
                                     "version": "1.0"}}
    (tmp_path / "other").mkdir()
    with run_stage(stage("validate_dataset", tmp_path / "other/manifest.csv")):
        (tmp_path / "other/manifest.csv").write_text("")
    assert "sources" not in json.loads((tmp_path / "other/provenance.json").read_text())


def test_a_new_version_is_refused_until_the_config_asks_for_it(dataverse, tmp_path):
    fetch(dataverse, tmp_path, version="latest")  # pins 1.0, the latest then
    new = second_version(dataverse)
    dataverse.reset_counts()

    # Later runs (here: the external set enabled) keep to the pinned version.
    fetch(dataverse, tmp_path, version="latest", external_test=True)

    assert read_manifest(tmp_path / MANIFEST)["version"] == "1.0"
    assert (tmp_path / ZIP1).read_bytes() == dataverse.file(ZIP1, "1.0").data
    assert set(dataverse.served) == {"ISIC2018_Task3_Test_Images.zip",
                                     "ISIC2018_Task3_Test_GroundTruth.tab"}
    dataverse.reset_counts()

    fetch(dataverse, tmp_path, version="2.0", external_test=True)

    assert read_manifest(tmp_path / MANIFEST)["version"] == "2.0"
    assert (tmp_path / ZIP1).read_bytes() == new.data
    assert dict(dataverse.served) == {ZIP1: len(new.data)}  # the one file that changed


def test_a_file_that_fails_the_pinned_checksum_is_refused(dataverse, tmp_path):
    dataverse.file(ZIP2).published_checksum = "0" * 64

    with pytest.raises(DownloadError, match=ZIP2) as err:
        fetch(dataverse, tmp_path)

    assert "0" * 64 in str(err.value) and "refused" in str(err.value)
    assert hashlib.sha256(dataverse.file(ZIP2).data).hexdigest() in str(err.value)
    assert not (tmp_path / ZIP2).exists()
    assert not list(tmp_path.glob("*.part*"))


def test_a_part_of_another_file_version_is_never_resumed(dataverse, tmp_path):
    fetch(dataverse, tmp_path)
    (tmp_path / ZIP1).unlink()
    old = dataverse.file(ZIP1, "1.0").data
    download.write_json({"file_id": 10, "size": len(old), "checksum_type": "MD5",
                         "checksum": hashlib.md5(old).hexdigest()},
                        tmp_path / f"{ZIP1}.part.json")
    (tmp_path / f"{ZIP1}.part").write_bytes(old[:20_000])  # a killed 1.0 download
    new = second_version(dataverse)
    dataverse.reset_counts()

    fetch(dataverse, tmp_path, version="2.0")

    assert (tmp_path / ZIP1).read_bytes() == new.data
    assert [s.headers.get("Range") for s in dataverse.requests_for(ZIP1)] == [None, None]
    assert not list(tmp_path.glob("*.part*"))


def test_a_part_of_unknown_origin_is_not_resumed(dataverse, tmp_path):
    (tmp_path / f"{ZIP2}.part").write_bytes(b"x" * 10_000)  # no record of what it is

    fetch(dataverse, tmp_path)

    assert (tmp_path / ZIP2).read_bytes() == dataverse.file(ZIP2).data
    assert dataverse.served[ZIP2] == 30_000


def test_a_kill_keeps_what_arrived_and_the_rerun_fetches_only_the_rest(dataverse, tmp_path):
    """Under 1 MiB arrived when the process was killed: it is on disk, and resuming serves
    exactly the missing bytes of that file, nothing of the finished one."""
    big = StoredFile(11, ZIP2, os.urandom(600_000), "SHA-256")
    dataverse.versions["1.0"][1] = big
    dataverse.fail(ZIP2, Fault(rate=400_000))
    code = ("import sys; from dermflow.data.download import download_ham10000; "
            "download_ham10000(sys.argv[1], base_url=sys.argv[2], version='1.0')")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with subprocess.Popen([sys.executable, "-c", code, str(tmp_path), dataverse.url], env=env,
                          stderr=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 30
        while dataverse.served[ZIP2] < 200_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    kept = (tmp_path / f"{ZIP2}.part").stat().st_size
    assert 0 < kept < len(big.data)
    assert (tmp_path / ZIP1).is_file()
    dataverse.reset_counts()

    fetch(dataverse, tmp_path)

    assert (tmp_path / ZIP2).read_bytes() == big.data
    assert dataverse.served[ZIP2] == len(big.data) - kept
    assert dataverse.requests_for(ZIP2)[-1].headers["Range"] == f"bytes={kept}-"
    assert dataverse.served[ZIP1] == 0


def test_drops_after_progress_resume_at_once_and_cost_no_retry(dataverse, tmp_path):
    dataverse.fail(ZIP1, *[Fault(cut_after=10_000)] * 3)

    fetch(dataverse, tmp_path, retries=0)

    assert (tmp_path / ZIP1).read_bytes() == dataverse.file(ZIP1).data
    ranges = [s.headers.get("Range") for s in dataverse.requests_for(ZIP1)
              if s.host == "storage"]
    assert ranges[0] is None and len(ranges) == 4
    assert all(r.startswith("bytes=") and r != "bytes=0-" for r in ranges[1:])


def test_retries_without_progress_are_bounded(dataverse, tmp_path):
    dataverse.fail(ZIP1, *[Fault(cut_after=0)] * 10)

    with pytest.raises(DownloadError, match=f"{ZIP1}.*3 tries"):
        fetch(dataverse, tmp_path, retries=2)

    assert len([s for s in dataverse.requests_for(ZIP1) if s.host == "storage"]) == 3
    assert not (tmp_path / ZIP1).exists()


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(dataverse, tmp_path, status):
    dataverse.fail(ZIP2, Fault(status=status, headers={"Retry-After": "1"},
                               body={"status": "ERROR", "message": "slow down"}))
    start = time.monotonic()

    fetch(dataverse, tmp_path)

    assert time.monotonic() - start >= 1.0
    assert (tmp_path / ZIP2).read_bytes() == dataverse.file(ZIP2).data


def test_a_stalled_read_times_out_and_resumes(dataverse, tmp_path):
    dataverse.fail(ZIP1, Fault(stall_after=20_000, stall_s=10.0))
    start = time.monotonic()

    fetch(dataverse, tmp_path, timeout=0.5, retries=0)

    assert time.monotonic() - start < 8.0
    assert (tmp_path / ZIP1).read_bytes() == dataverse.file(ZIP1).data
    second = [s for s in dataverse.requests_for(ZIP1) if s.host == "storage"][1]
    assert int(second.headers["Range"].removeprefix("bytes=").rstrip("-")) >= 20_000


def test_a_server_ignoring_range_restarts_from_zero(dataverse, tmp_path):
    dataverse.fail(ZIP2, Fault(cut_after=12_000))
    dataverse.honour_range = False

    fetch(dataverse, tmp_path)

    assert (tmp_path / ZIP2).read_bytes() == dataverse.file(ZIP2).data  # no prefix twice


def test_a_whole_part_of_unknown_size_ends_on_416(dataverse, tmp_path):
    file = dataverse.file(ZIP1)
    file.publish_size = False
    fetch(dataverse, tmp_path)  # its manifest entry has no size
    (tmp_path / ZIP1).rename(tmp_path / f"{ZIP1}.part")  # as if killed after the last byte
    download.write_json({"file_id": 10, "size": None, "checksum_type": "MD5",
                         "checksum": hashlib.md5(file.data).hexdigest()},
                        tmp_path / f"{ZIP1}.part.json")
    dataverse.reset_counts()

    fetch(dataverse, tmp_path)

    storage = [s for s in dataverse.requests_for(ZIP1) if s.host == "storage"]
    assert [(s.headers["Range"], s.status) for s in storage] == [("bytes=40000-", 416)]
    assert (tmp_path / ZIP1).read_bytes() == file.data


GUESTBOOK = "You may not download this file without the required Guestbook response."


@pytest.mark.parametrize(("fault", "said", "hint"), [
    (Fault(status=400, body={"status": "ERROR", "message": GUESTBOOK}), GUESTBOOK,
     "guestbook response or terms of use"),
    (Fault(status=403, body="<html><body><h1>403 Forbidden</h1>Request blocked.</body></html>"),
     "403 Forbidden Request blocked.", "firewall"),
    (Fault(status=401, body={"status": "ERROR", "message": "Not authorized to access this "
                             "object via this API endpoint."}), "Not authorized", "restricted"),
    (Fault(status=500, body={"status": "ERROR", "message": "Internal server error"}),
     "Internal server error", "run again later"),
])
def test_each_http_error_shows_the_server_message_and_a_fitting_hint(dataverse, tmp_path,
                                                                      fault, said, hint):
    dataverse.fail(ZIP1, *[fault] * 3)

    with pytest.raises(DownloadError) as err:
        fetch(dataverse, tmp_path, retries=1)

    message = str(err.value)
    assert ZIP1 in message and f"HTTP {fault.status}" in message
    assert said in message and hint in message
    if fault.status == 403:
        assert USER_AGENT in message  # what the firewall was shown


def test_an_unknown_version_says_so(dataverse, tmp_path):
    with pytest.raises(DownloadError, match="Dataset version 9.9 of dataset 1 not found") as err:
        fetch(dataverse, tmp_path, version="9.9")
    assert "dataset.version" in str(err.value)


def refused_url() -> str:
    """A server address nothing answers at: a port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("metadata", [META, META_TAB])
def test_an_unreachable_host_points_to_local_files_and_the_demo(tmp_path, monkeypatch,
                                                                 metadata):
    monkeypatch.setattr(download, "_RETRY_DELAY_S", 0.0)

    with pytest.raises(DownloadError) as err:
        download_ham10000(tmp_path, base_url=refused_url(), metadata=metadata, timeout=2.0,
                          retries=1)

    message = str(err.value)
    assert "could not reach" in message and "dataset.source: local" in message
    assert "--profile profiles/demo" in message
    # The files to fetch by hand, the metadata as the config names it.
    assert f"{ZIP1}, {ZIP2}, {metadata}" in message
    assert ({META, META_TAB} - {metadata}).pop() not in message
    assert EXTERNAL_TEST_FILES[0] not in message  # not asked for


def test_an_unreachable_host_names_the_metadata_key_where_its_name_is_not_known(
        tmp_path, monkeypatch):
    """The workflow's manifest job is not told the metadata's name (a name changed later
    would refetch the manifest): its offline error points to the key instead."""
    monkeypatch.setattr(download, "_RETRY_DELAY_S", 0.0)

    with pytest.raises(DownloadError) as err:
        fetch_manifest(tmp_path / MANIFEST, base_url=refused_url(), timeout=2.0, retries=0)

    assert "`dataset.metadata`" in str(err.value) and ZIP1 in str(err.value)


def test_a_file_missing_from_the_version_is_named(dataverse, tmp_path):
    dataverse.versions["1.0"] = [f for f in dataverse.versions["1.0"] if f.label != ZIP2]

    with pytest.raises(DownloadError, match=f"{ZIP2} is not in version 1.0"):
        fetch(dataverse, tmp_path)


def test_metadata_named_tab_is_downloaded_verified_and_read(dataverse, tmp_path):
    fetch(dataverse, tmp_path, metadata=META_TAB)

    assert (tmp_path / META_TAB).read_bytes() == dataverse.file(META_TAB).data
    assert not (tmp_path / META).exists()
    assert len(read_metadata(tmp_path / META_TAB)) == 3


def test_the_records_archival_tab_metadata_reads_as_its_csv(dataverse, tmp_path):
    """dataset.source: local with the record's tab-separated, quoted .tab."""
    csv_bytes = dataverse.file(META_TAB).data
    (tmp_path / META).write_bytes(csv_bytes)
    (tmp_path / META_TAB).write_bytes(tab_copy(csv_bytes))
    assert b'"lower, extremity"' in tab_copy(csv_bytes) and b"\t" in tab_copy(csv_bytes)

    pd.testing.assert_frame_equal(read_metadata(tmp_path / META_TAB),
                                  read_metadata(tmp_path / META))


def test_a_complete_file_is_verified_not_fetched(dataverse, tmp_path):
    fetch(dataverse, tmp_path)
    dataverse.reset_counts()

    download_file(tmp_path / ZIP2, tmp_path / MANIFEST)

    assert dataverse.seen == []


@pytest.mark.workflow
def test_download_rules_keep_every_finished_file(dataverse, tmp_path):
    """The workflow's download rules: a failed file fails alone; enabling the external set
    later serves only its files and the missing rest of the failed one; the same server
    with a trailing slash plans nothing, and the same version asked for anew plans nothing
    once the manifest alone was refetched; editing dermflow's code, the download module
    included, plans nothing but a newly named .tab metadata."""
    work = copy_workflow(tmp_path / "wf")
    (work / "over.yaml").write_text(yaml.safe_dump({"dataset": {
        "source": "download", "path": "raw", "dataverse_url": dataverse.url,
        "version": "1.0", "external_test": False}}))
    args = ("--cores", "2", "--until", "download_file", "--configfile",
            "profiles/demo/demo.yaml", "over.yaml")
    dataverse.fail(ZIP2, Fault(cut_after=12_000), Fault(
        status=403, body="<html><h1>403 Forbidden</h1>Request blocked by the firewall.</html>"))

    first = snakemake(work, *args, "--keep-going", check=False)

    assert first.returncode != 0
    assert "Request blocked by the firewall." in first.stderr
    assert {name: dataverse.served[name] for name in (ZIP1, META_TAB)} == {
        ZIP1: 40_000, META_TAB: len(dataverse.file(META_TAB).data)}
    kept = (work / "raw" / f"{ZIP2}.part").stat().st_size
    assert kept == 12_000
    dataverse.reset_counts()

    over = yaml.safe_load((work / "over.yaml").read_text())
    over["dataset"]["external_test"] = True
    (work / "over.yaml").write_text(yaml.safe_dump(over))
    snakemake(work, *args)

    assert dict(dataverse.served) == {
        ZIP2: 30_000 - kept, "ISIC2018_Task3_Test_Images.zip": 20_000,
        "ISIC2018_Task3_Test_GroundTruth.tab": len(
            dataverse.file("ISIC2018_Task3_Test_GroundTruth.tab").data)}
    for name in (*CORE_FILES, *EXTERNAL_TEST_FILES):
        assert (work / "raw" / name).is_file()

    # The server with a trailing slash is the same server: nothing is planned.
    over["dataset"]["dataverse_url"] = dataverse.url + "/"
    (work / "over.yaml").write_text(yaml.safe_dump(over))
    assert planned_jobs(work, *args[2:]) == {}
    # The pinned version asked for as the latest: a new param, so Snakemake plans the
    # manifest and every job after it. Fetching the manifest alone first finds the same
    # files and keeps its bytes, after which nothing is planned.
    manifest = work / "raw" / MANIFEST
    pinned = manifest.read_bytes()
    over["dataset"]["version"] = "latest"
    (work / "over.yaml").write_text(yaml.safe_dump(over))
    assert planned_jobs(work, *args[2:]) == {"download_manifest": 1, "download_file": 5}
    snakemake(work, "--cores", "1", "--until", "download_manifest", *args[4:])
    assert manifest.read_bytes() == pinned
    assert planned_jobs(work, *args[2:]) == {}

    # Library code edited (the download module too) and the metadata named as the record
    # names it: only that file is planned.
    for module in ("errors.py", "data/download.py"):
        with open(work / "src/dermflow" / module, "a") as fh:
            fh.write("\n# edited\n")
    over["dataset"]["metadata"] = META_TAB
    (work / "over.yaml").write_text(yaml.safe_dump(over))
    assert planned_jobs(work, *args[2:]) == {"download_file": 1}
