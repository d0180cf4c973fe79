"""The C'GAN stages on the demo DAG: outputs, what the generator does, the gate's two paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_WEIGHTS, planned_jobs, snakemake

from dermflow.data.cache import load_split_cache
from dermflow.gan.networks import attention_tensor, load_networks
from dermflow.gan.perceptual import ALEXNET_FILE
from dermflow.gan.plan import synthetic_counts
from dermflow.gan.step import TO_UNIT
from dermflow.gan.synthesis import synthesize
from dermflow.labels import CLASSES
from dermflow.training.batches import ImageTensor

pytestmark = pytest.mark.workflow
GAN_STAGES = {"train_gan", "generate_synthetic", "check_synthetic", "split_pool"}


def provenance_config(run: Path, folder: str) -> dict:
    return json.loads((run / "results" / folder / "provenance.json").read_text())["config"]


def test_gan_stages_write_their_outputs(demo_run):
    config = provenance_config(demo_run, "gan")
    history = pd.read_csv(demo_run / "results/gan/history.csv")
    assert list(history["epoch"]) == list(range(1, config["gan"]["epochs"] + 1))
    assert np.isfinite(history[["loss_d", "loss_g", "gradient_penalty"]].to_numpy()).all()
    for figure in ("gan/losses.png", "synthetic/examples.png"):
        assert (demo_run / "results" / figure).read_bytes()[:4] == b"\x89PNG"
    assert not (demo_run / "results/checkpoints/train_gan/last.pt").exists()
    for rule in GAN_STAGES:
        assert (demo_run / f"logs/{rule}.log").stat().st_size > 0, rule
        assert (demo_run / f"results/benchmarks/{rule}.tsv").is_file(), rule


def test_generated_counts_match_the_config(demo_run):
    config = provenance_config(demo_run, "synthetic")
    split = pd.read_csv(demo_run / "results/split/split.csv")
    pool = split[split["split"] == "train"]  # grouped: the GAN learnt from the train split
    manifest = pd.read_csv(demo_run / "results/synthetic/manifest.csv")
    expected = synthetic_counts(pool["dx"].value_counts().to_dict(), config["synthesis"])
    assert manifest["dx"].value_counts().reindex(list(CLASSES), fill_value=0).to_dict() == expected
    assert sum(expected.values()) > 100
    images = np.load(demo_run / "results/synthetic/synthetic.npy", mmap_mode="r")
    size = config["image_size"]
    assert images.shape == (len(manifest), size, size, 3) and images.dtype == np.uint8
    sources = split.set_index("image_id").loc[manifest["source_image_id"]]
    assert (sources["split"] == "train").all()
    assert (sources["dx"].to_numpy() == manifest["dx"].to_numpy()).all()
    assert manifest["seed"].is_unique


@pytest.fixture(scope="module")
def generator_setup(demo_run):
    """The trained demo generator with the training pool's images and attention maps."""
    size = provenance_config(demo_run, "gan")["image_size"]
    images, index = load_split_cache(demo_run / f"results/cache/images_{size}.npy",
                                     demo_run / f"results/cache/index_{size}.csv",
                                     demo_run / "results/split/split.csv")
    maps = np.load(demo_run / "results/attention/attention.npy")
    generator, _, _ = load_networks(demo_run / "results/gan/generator.pt", torch.device("cpu"))
    data = ImageTensor(images, index["label"].to_numpy(), torch.device("cpu"), *TO_UNIT)
    rows = np.flatnonzero((index["split"] == "train").to_numpy())[:64]
    x = data.batch(torch.as_tensor(rows))[0]
    return generator, data, attention_tensor(maps, data.device, True), rows, x, maps[rows]


def draws(data: ImageTensor, rows: np.ndarray, seeds: np.ndarray) -> pd.DataFrame:
    """Manifest rows: one synthetic image per (source row, seed), of the source's class."""
    return pd.DataFrame({"source_row": rows, "seed": seeds,
                         "label": data.labels[torch.as_tensor(rows)].numpy()})


def test_generator_changes_attended_regions_and_spares_the_background(generator_setup):
    generator, data, attention, rows, x, maps = generator_setup
    fake = synthesize(generator, data, attention, draws(data, rows, np.arange(len(rows))))
    change = ((fake - x).abs().mean(1) / 2).numpy()  # [0, 1] units per pixel
    high, low = change[maps > 0.5].mean(), change[maps < 0.1].mean()
    assert high > 5 * low
    assert low < 0.01


def test_two_draws_differ_but_stay_close_to_their_source(generator_setup):
    generator, data, attention, rows, x, _ = generator_setup
    first = synthesize(generator, data, attention, draws(data, rows, np.arange(len(rows))))
    second = synthesize(generator, data, attention,
                        draws(data, rows, np.arange(len(rows)) + 10_000))
    between = ((first - second).abs().mean(dim=(1, 2, 3)) / 2).numpy()
    to_source = ((first - x).abs().mean(dim=(1, 2, 3)) / 2).numpy()
    assert (between > 0).all() and between.mean() > 0.001  # the noise makes a difference
    assert to_source.mean() < 0.05  # the identity term keeps them near the source
    again = synthesize(generator, data, attention, draws(data, rows, np.arange(len(rows))))
    assert torch.equal(first, again)  # and a seed reproduces its image


def test_quality_report(demo_run):
    report = json.loads((demo_run / "results/synthetic/quality.json").read_text())
    manifest = pd.read_csv(demo_run / "results/synthetic/manifest.csv")
    assert report["images"]["synthetic"] == len(manifest)
    baseline = report["spaces"]["baseline"]
    assert baseline["available"] and "within dermflow" in baseline["description"]
    assert baseline["overall"]["fid"] > 0 and 0 <= baseline["overall"]["precision"] <= 1
    assert set(baseline["per_class"]) == set(CLASSES)
    assert report["spaces"]["inception"] == {"available": False,
                                             "reason": "quality.inception: false"}
    nearest = pd.read_csv(demo_run / "results/synthetic/nearest.csv")
    assert list(nearest["synthetic_id"]) == list(manifest["synthetic_id"])
    assert 0 <= report["memorisation"]["near_copy_fraction"] <= 1
    lp = report["lpips"]
    assert lp["available"] or not (SHARED_WEIGHTS / ALEXNET_FILE).is_file()
    if lp["available"]:
        assert 0 < lp["diversity"] < 1 and 0 < lp["to_source"] < 1
        assert all(0 < lp["per_class"][dx]["real_diversity"] < 1 for dx in CLASSES)
    else:  # no weights: the same entry, every figure None, and why
        assert lp["reason"] and lp["to_source"] is None and set(lp["per_class"]) == set(CLASSES)
    gate = report["gate"]
    assert gate["on_fail"] == "warn" and gate["status"] in {"passed", "failed", "incomplete"}
    assert gate["passed"] == (gate["status"] == "passed")
    assert all(c["ran"] or c["reason"] for c in gate["checks"])
    assert "| baseline |" in (demo_run / "results/synthetic/quality.md").read_text()


def test_grouped_pool_keeps_synthetic_images_out_of_val_and_test(demo_run):
    pooled = pd.read_csv(demo_run / "results/synthetic/split.csv")
    split = pd.read_csv(demo_run / "results/split/split.csv")
    synthetic = pooled[pooled["source"] == "synthetic"]
    assert len(synthetic) == len(pd.read_csv(demo_run / "results/synthetic/manifest.csv"))
    assert (synthetic["split"] == "train").all()
    real = pooled[pooled["source"] == "real"].set_index("image_id")["split"].sort_index()
    assert real.equals(split.set_index("image_id")["split"].sort_index())


def test_gan_setting_reruns_the_gan_and_after_only(demo_run):
    jobs = planned_jobs(demo_run, "--profile", "profiles/demo", "--config", "gan={epochs: 3}")
    assert set(jobs) >= GAN_STAGES
    assert not {"train_baseline", "extract_attention", "split_dataset"} & set(jobs)


def copy_run(demo_run: Path, dest: Path) -> Path:
    shutil.copytree(demo_run, dest, symlinks=True)
    return dest


def test_failed_gate_stops_the_run_and_keeps_the_synthetic_images(demo_run, tmp_path):
    run = copy_run(demo_run, tmp_path / "fail")
    images = (run / "results/synthetic/synthetic.npy").read_bytes()
    proc = snakemake(run, "--profile", "profiles/demo", "--config",
                     "quality={on_fail: fail, thresholds: {fid_baseline_max: 0.001}}", check=False)
    assert proc.returncode != 0
    log = (run / "logs/check_synthetic.log").read_text()
    assert "failed the quality gate: fid_baseline_max=" in log
    assert not (run / "results/synthetic/quality.json").exists()
    assert (run / "results/synthetic/synthetic.npy").read_bytes() == images


def test_warned_gate_continues_and_says_why(demo_run, tmp_path):
    run = copy_run(demo_run, tmp_path / "warn")
    weights = run / "resources/weights"  # a broken local Inception file: reported, not fatal
    if weights.is_symlink():
        weights.unlink()
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"truncated")
    snakemake(run, "--profile", "profiles/demo", "--config",  # up to the gate's consumer
              "quality={on_fail: warn, inception: true, thresholds: {fid_baseline_max: 0.001}}",
              "--", "results/synthetic/split.csv")
    report = json.loads((run / "results/synthetic/quality.json").read_text())
    assert report["gate"]["status"] == "failed" and report["gate"]["passed"] is False
    assert report["gate"]["failed"][0] == "fid_baseline_max"  # near copies may fail beside it
    assert report["spaces"]["inception"]["available"] is False
    assert "quality.on_fail: warn, continuing" in (run / "logs/check_synthetic.log").read_text()
    assert (run / "results/synthetic/split.csv").is_file()
