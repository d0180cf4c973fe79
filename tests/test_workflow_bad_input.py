"""Bad input and interruptions through the real DAG, on tiny generated datasets.

Each test stops early (``--until``), without hair removal, so it takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_workflow, planned_jobs, snakemake

from dermflow.data.demo import make_external_test
from dermflow.data.isic2018 import GROUND_TRUTH_TAB

pytestmark = pytest.mark.workflow
QUICK = ("--cores", "1", "--config", "hair_removal={enabled: false}", "image_size=32")


def local(root: Path) -> str:
    return f"dataset={{source: local, path: {root}}}"


def test_interrupted_writes_leave_no_temporaries(tmp_path, tiny_dataset):
    workdir = copy_workflow(tmp_path / "w")
    cache = workdir / "results" / "cache"
    cache.mkdir(parents=True)
    debris = [cache / ".images_32.npy.k2j_x9a0.tmp", cache / ".index_32.csv.0a1b2c3d.tmp"]
    for path in debris:  # what a cache_images killed mid-write leaves
        path.write_bytes(b"\0" * 1024)
    snakemake(workdir, *QUICK, local(tiny_dataset), "--until", "cache_images")
    assert (cache / "images_32.npy").is_file()
    assert not list(cache.glob(".*.tmp"))


@pytest.mark.parametrize("protocol", ["grouped", "paper"])
def test_fully_quarantined_class_stops_the_run_before_the_split(tmp_path, tiny_dataset, protocol):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv")
    for image_id in meta.loc[meta["dx"] == "df", "image_id"]:
        (tiny_dataset / "HAM10000_images_part_1" / f"{image_id}.jpg").write_bytes(b"")
    workdir = copy_workflow(tmp_path / "w")
    proc = snakemake(workdir, *QUICK, local(tiny_dataset), "on_bad_input=quarantine",
                     f"protocol={protocol}", "--until", "split_dataset", check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/validate_dataset.log").read_text()
    assert "class df: 6 image(s) in the metadata, all quarantined (6 empty_file)" in log
    rejected = pd.read_csv(workdir / "logs/validate_dataset.quarantine.csv")
    assert set(rejected["reason"]) == {"empty file (0 bytes)"} and len(rejected) == 6
    assert not (workdir / "results/split/split.csv").exists()


def test_fixing_an_image_in_place_reruns_validation(tmp_path, tiny_dataset):
    image = tiny_dataset / "HAM10000_images_part_1" / "ISIC_0000003.jpg"
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 2])
    workdir = copy_workflow(tmp_path / "w")
    args = (*QUICK, local(tiny_dataset), "on_bad_input=quarantine", "--until", "validate_dataset")
    snakemake(workdir, *args)
    assert pd.read_csv(workdir / "results/data/quarantine.csv")["image_id"].tolist() == [
        "ISIC_0000003"]
    assert planned_jobs(workdir, *args) == {}

    with open(image, "r+b") as fh:  # in place: the folder's timestamp stays as it was
        fh.write(good)
    assert planned_jobs(workdir, *args) == {"validate_dataset": 1}
    snakemake(workdir, *args)
    assert pd.read_csv(workdir / "results/data/quarantine.csv").empty
    assert planned_jobs(workdir, *args) == {}


def test_external_ground_truth_as_published_on_dataverse(tmp_path, tiny_dataset):
    truth = make_external_test(tiny_dataset, n_images=100, width=40, height=30, seed=3,
                               layout="metadata", missing=1)
    assert (tiny_dataset / GROUND_TRUTH_TAB).is_file()
    workdir = copy_workflow(tmp_path / "w")
    snakemake(workdir, *QUICK, "on_bad_input=fail",
              f"dataset={{source: local, path: {tiny_dataset}, external_test: true}}",
              "--until", "prepare_external", "validate_dataset")
    index = pd.read_csv(workdir / "results/external/index_32.csv")
    assert len(index) == 99 and set(index["lesion_id"]) <= set(truth["lesion_id"])
    quarantine = pd.read_csv(workdir / "results/external/quarantine.csv")
    assert quarantine["image_id"].tolist() == [truth["image_id"].iloc[-1]]
    log = (workdir / "logs/prepare_external.log").read_text()
    assert "WARNING dermflow.data.external: external test set: 1 ground-truth row(s) without an " \
           "image" in log
    manifest = pd.read_csv(workdir / "results/data/manifest.csv")
    assert len(manifest) == 42, "the external images are not HAM10000's"
