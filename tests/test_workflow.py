"""The real DAG on the demo dataset: outputs, reruns, bad config and bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow, planned_jobs, snakemake

from dermflow.labels import CLASSES

pytestmark = pytest.mark.workflow
UPSTREAM_OF_SPLIT = ("make_demo_dataset", "validate_dataset", "remove_hair", "cache_images")
STAGES = ("make_demo_dataset", "validate_dataset", "remove_hair", "cache_images", "split_dataset")
SHARED_HAM = REPO.parent / "shared" / "data" / "ham10000"


def demo_config() -> dict:
    return yaml.safe_load((REPO / "profiles/demo/demo.yaml").read_text())


def test_demo_dag_outputs(demo_run):
    manifest = pd.read_csv(demo_run / "results/data/manifest.csv")
    assert len(manifest) == 320
    assert pd.read_csv(demo_run / "results/data/quarantine.csv").empty
    size = demo_config()["image_size"]
    cache = np.load(demo_run / f"results/cache/images_{size}.npy", mmap_mode="r")
    index = pd.read_csv(demo_run / f"results/cache/index_{size}.csv")
    assert cache.shape == (320, size, size, 3) and cache.dtype == np.uint8
    assert list(index["row"]) == list(range(320))
    assert set(index["image_id"]) == set(manifest["image_id"])


def test_demo_split_is_grouped_and_complete(demo_run):
    split = pd.read_csv(demo_run / "results/split/split.csv")
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    per_class = pd.crosstab(split["dx"], split["split"])
    assert set(per_class.index) == set(CLASSES)
    assert (per_class[["train", "val", "test"]] > 0).all().all()
    summary = json.loads((demo_run / "results/split/summary.json").read_text())
    assert summary["lesions_in_several_splits"] == 0


def test_demo_hair_removal_helps(demo_run):
    metrics = json.loads((demo_run / "results/hair/metrics.json").read_text())
    truth = metrics["truth"]
    assert truth["psnr_clean"] > truth["psnr_hairy"] + 1.0
    assert truth["mask_iou"] > 0.3
    figure = demo_run / "results/hair/hair_removal_steps.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((demo_run / "results/hair/images").glob("*.png"))) == 320


def test_every_stage_logs_benchmarks_and_records_provenance(demo_run):
    for rule in STAGES:
        logs = list((demo_run / "logs").glob(f"{rule}*.log"))
        assert logs and logs[0].stat().st_size > 0, rule
        assert list((demo_run / "results/benchmarks").glob(f"{rule}*.tsv")), rule
    for folder in ("data", "hair", "cache", "split"):
        record = json.loads((demo_run / "results" / folder / "provenance.json").read_text())
        assert record["config"]["dataset"]["source"] == "demo"
        assert record["packages"]["numpy"] != "not installed"
        assert {"git_commit", "device", "python", "stage"} <= set(record)


def test_same_command_again_does_nothing(demo_run):
    assert planned_jobs(demo_run, "--profile", "profiles/demo") == {}


def test_hair_parameter_reruns_hair_removal_and_after_only(demo_run):
    jobs = planned_jobs(demo_run, "--profile", "profiles/demo",
                        "--config", "hair_removal={threshold: 12}")
    assert {"remove_hair", "cache_images"} <= set(jobs)
    assert not {"make_demo_dataset", "validate_dataset", "split_dataset"} & set(jobs)


def test_split_seed_reruns_the_split_and_after_only(demo_run):
    jobs = planned_jobs(demo_run, "--profile", "profiles/demo", "--config", "split={seed: 7}")
    assert "split_dataset" in jobs
    assert not set(UPSTREAM_OF_SPLIT) & set(jobs)


def test_editing_library_code_reruns_its_stage(demo_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(demo_run, workdir, symlinks=True)
    with open(workdir / "src/dermflow/data/hair.py", "a") as fh:
        fh.write("\n# an edit to the hair-removal code\n")
    jobs = planned_jobs(workdir, "--profile", "profiles/demo")
    assert {"remove_hair", "cache_images"} <= set(jobs)
    assert not {"make_demo_dataset", "validate_dataset", "split_dataset"} & set(jobs)


@pytest.mark.parametrize(
    ("override", "key"),
    [("image_size=5", "image_size"), ("hair_removal={treshold: 3}", "hair_removal.treshold"),
     ("protocol=leaky", "protocol")],
)
def test_bad_config_stops_before_any_job(tmp_path, override, key):
    workdir = copy_workflow(tmp_path / "w")
    proc = snakemake(workdir, "--profile", "profiles/demo", "--config", override, check=False)
    assert proc.returncode != 0
    assert f"{key}:" in proc.stdout + proc.stderr
    assert not (workdir / "results").exists() and not (workdir / "resources").exists()


def test_bad_inputs_through_the_dag(tmp_path, broken_dataset):
    root, expected = broken_dataset
    workdir = copy_workflow(tmp_path / "w")
    local = f"dataset={{source: local, path: {root}}}"
    args = ("--cores", "1", "--until", "validate_dataset", "--config", local)
    proc = snakemake(workdir, *args, "on_bad_input=fail", check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/validate_dataset.log").read_text()
    for image_id, reason in expected.items():
        assert image_id in log and reason in log
    assert "Traceback" not in log
    assert not (workdir / "results/data/manifest.csv").exists()
    rejected = workdir / "logs/validate_dataset.quarantine.csv"
    assert set(pd.read_csv(rejected)["image_id"]) == set(expected)

    snakemake(workdir, *args, "on_bad_input=quarantine")
    quarantine = pd.read_csv(workdir / "results/data/quarantine.csv")
    manifest = pd.read_csv(workdir / "results/data/manifest.csv")
    assert set(quarantine["image_id"]) == set(expected)
    assert not rejected.exists()
    assert not set(manifest["image_id"]) & set(expected)


@pytest.mark.skipif(not SHARED_HAM.is_dir(), reason="shared HAM10000 copy not present")
def test_local_source_on_real_ham10000(tmp_path):
    workdir = copy_workflow(tmp_path / "w")
    snakemake(workdir, "--cores", "2", "--until", "split_dataset",
              "--config", f"dataset={{source: local, path: {SHARED_HAM}}}")
    manifest = pd.read_csv(workdir / "results/data/manifest.csv")
    assert len(manifest) == 10015
    split = pd.read_csv(workdir / "results/split/split.csv")
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    fractions = pd.crosstab(split["dx"], split["split"], normalize="index")
    assert ((fractions["train"] - 0.7).abs() < 0.03).all()
    assert ((fractions["test"] - 0.1).abs() < 0.03).all()


GENERATOR_STAGES = {"train_baseline", "extract_attention", "train_gan", "generate_synthetic",
                    "check_synthetic", "split_pool"}


def test_a_run_without_generator_data_plans_no_generator(tmp_path):
    workdir = copy_workflow(tmp_path / "w")
    (workdir / "plain.yaml").write_text(yaml.safe_dump({"experiments": [
        {"name": "strong_baseline", "balance": "none", "model": "resnetv2_50"},
        {"name": "augment_resnet50v2_deit", "balance": "augment", "model": "resnet50v2_deit"}]}))
    jobs = planned_jobs(workdir, "--profile", "profiles/demo", "--configfile",
                        "profiles/demo/demo.yaml", "plain.yaml")
    assert not GENERATOR_STAGES & set(jobs)
    assert jobs["train_classifier"] == 2
    assert {"build_dataset", "build_augmented_dataset", "predict", "evaluate", "compare",
            "report"} <= set(jobs)


@pytest.mark.skipif(not SHARED_HAM.is_dir(), reason="shared HAM10000 copy not present")
def test_cpu_science_plans_the_strong_baseline_alone(tmp_path):
    workdir = copy_workflow(tmp_path / "w")
    jobs = planned_jobs(workdir, "--profile", "profiles/cpu-science",
                        "--config", f"dataset={{source: local, path: {SHARED_HAM}}}")
    assert jobs == dict.fromkeys(["validate_dataset", "remove_hair", "cache_images",
                                  "split_dataset", "build_dataset", "train_classifier", "predict",
                                  "evaluate", "compare", "report", "all"], 1)
