"""The experiments on the demo DAG: datasets per balance mode, training, predictions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, SNAKEMAKE, planned_jobs, snakemake
from sklearn.metrics import balanced_accuracy_score

from dermflow.data.cache import load_dataset
from dermflow.labels import CLASSES, positions, task_classes, task_labels
from dermflow.models.io import load_model
from dermflow.models.registry import experiment_settings
from dermflow.training.batches import ImageTensor
from dermflow.training.loop import predict

pytestmark = pytest.mark.workflow
DEMO = yaml.safe_load((REPO / "profiles/demo/demo.yaml").read_text())
DEMO_EXPERIMENTS = DEMO["experiments"]


def test_datasets_keep_val_and_test_real_under_grouped(demo_run):
    split = pd.read_csv(demo_run / "results/split/split.csv").set_index("image_id")["split"]
    manifest = pd.read_csv(demo_run / "results/synthetic/manifest.csv")
    for balance, extra in (("none", 0), ("cgan", len(manifest)), ("augment", len(manifest))):
        table = pd.read_csv(demo_run / f"results/datasets/{balance}/dataset.csv")
        assert len(table) == len(split) + extra, balance
        assert (table.loc[table["split"] != "train", "source"] == "real").all(), balance
        real = table[table["source"] == "real"].set_index("image_id")["split"]
        assert real.sort_index().equals(split.sort_index()), balance
        assert (table["label"] == table["dx"].map(CLASSES.index)).all()
    augmented = np.load(demo_run / "results/datasets/augment/augmented.npy", mmap_mode="r")
    table = pd.read_csv(demo_run / "results/datasets/augment/dataset.csv")
    rows = table.loc[table["source"] == "augmented", "row"]
    assert augmented.shape[0] == len(manifest) and sorted(rows) == list(range(len(manifest)))
    per_class = table[table["source"] == "augmented"]["dx"].value_counts().sort_index()
    assert per_class.equals(manifest["dx"].value_counts().sort_index())  # same counts as C'GAN


@pytest.mark.parametrize("entry", DEMO_EXPERIMENTS, ids=lambda e: e["name"])
def test_experiment_trains_and_predicts(demo_run, entry):
    experiment = entry["name"]
    task = entry.get("task", "multiclass")
    folder = demo_run / "results/experiments" / experiment
    predictions = pd.read_csv(folder / "predictions.csv")
    probs = predictions[[f"prob_{c}" for c in task_classes(task)]].to_numpy()
    assert not [c for c in predictions.columns if c.startswith("prob_")][probs.shape[1]:]
    assert (predictions["label"] == task_labels(predictions["dx"], task)).all()
    assert np.allclose(probs.sum(1), 1, atol=1e-4) and (probs >= 0).all()
    assert (predictions["pred"] == probs.argmax(1)).all()
    assert set(predictions["split"]) == {"val", "test", "external"}  # demo: external_test
    assert (predictions["source"] == "real").all()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["parameters_millions"] > 1 and metrics["training_seconds"] > 0
    assert metrics["images_per_s"] > 0
    history = pd.read_csv(folder / "history.csv")
    settings = experiment_settings({"schedule": "staged"}, entry)  # the demo's schedule
    assert list(history["stage"].unique()) == (
        ["warmup", "finetune"] if settings["schedule"] == "staged" else ["single"])
    assert list(history["epoch"]) == list(range(1, len(history) + 1))
    assert (folder / "saliency.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((demo_run / "results/checkpoints/train_classifier" / experiment).glob("*.pt"))


def test_each_model_trains_with_its_papers_recipe(demo_run):
    """Paper 001's hybrids: Keras augmentation, class weights, val-loss callbacks, frozen
    layers; paper 003's CNN: its Adam betas; an experiment's override still wins."""
    configs = {e["name"]: json.loads((demo_run / "results/experiments" / e["name"] /
                                      "metrics.json").read_text())["train_config"]
               for e in DEMO_EXPERIMENTS}
    hybrid = configs["none_cnn_densenet121"]
    assert hybrid["augmentation"] == "keras" and hybrid["class_weights"]
    assert hybrid["monitor"] == "val_loss" and hybrid["plateau_patience"] == 5
    assert hybrid["lr"] == 1e-3  # the demo's override of the paper's 1e-4
    fusion = configs["cgan_resnet50v2_deit"]
    assert fusion["augmentation"] == "dermoscopy" and fusion["monitor"] == "val_macro_f1"
    model = torch.load(demo_run / "results/experiments/none_cnn_densenet121/model.pt",
                       map_location="cpu", weights_only=True)
    assert model["settings"]["frozen_layers"] == 55 and model["settings"]["schedule"] == "single"


def test_strong_baseline_trains_by_its_recipe_and_predicts_with_flip_tta(demo_run):
    """The recipe reaches the loop (AdamW, one-cycle per batch, balanced sampling, label
    smoothing, EMA) and predict averages the image and its mirror."""
    folder = demo_run / "results/experiments/strong_baseline"
    config = json.loads((folder / "metrics.json").read_text())["train_config"]
    assert {k: config[k] for k in ("optimizer", "lr_schedule", "sampling", "sampling_power",
                                   "label_smoothing", "ema", "epochs", "lr_warmup_epochs")} == {
        "optimizer": "adamw", "lr_schedule": "onecycle", "sampling": "balanced",
        "sampling_power": 0.5, "label_smoothing": 0.1, "ema": 0.999, "epochs": 3,
        "lr_warmup_epochs": 1}
    lr = pd.read_csv(folder / "history.csv")["lr"]
    assert lr.iloc[-1] < 1e-3 * lr.max() < lr.iloc[0]  # the cycle ran down to ~0
    model, meta = load_model(folder / "model.pt", torch.device("cpu"))
    images, table = load_dataset(str(demo_run / "results/datasets/none/dataset.csv"),
                                 str(demo_run / f"results/cache/images_{DEMO['image_size']}.npy"),
                                 None)
    test = positions(table, "test")
    data = ImageTensor(images, np.zeros(len(images), np.int64), torch.device("cpu"),
                       meta["mean"], meta["std"])
    written = pd.read_csv(folder / "predictions.csv").query("split == 'test'")
    written = written[[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(written, predict(model, data, test, 64, tta="flip"), atol=1e-5)
    assert not np.allclose(written, predict(model, data, test, 64, tta="none"), atol=1e-5)


def test_attention_hybrid_shows_its_own_heatmaps(demo_run):
    """Paper 001's attention model gets a second row of saliency maps: its attention."""
    def height(name: str) -> int:
        png = (demo_run / "results/experiments" / name / "saliency.png").read_bytes()
        return int.from_bytes(png[20:24], "big")
    assert height("none_cnn_resnet50v2_attention") > 1.7 * height("none_cnn_densenet121")


def test_binary_experiment_predicts_benign_or_malignant(demo_run):
    predictions = pd.read_csv(demo_run / "results/experiments/none_asff_resnet50_binary/"
                                         "predictions.csv")
    malignant = predictions["dx"].isin(["mel", "bcc", "akiec"])
    assert (predictions["label"] == malignant.astype(int)).all()
    assert np.allclose(predictions[["prob_benign", "prob_malignant"]].sum(axis=1), 1, atol=1e-4)


def test_fusion_model_beats_chance_on_the_test_split(demo_run):
    predictions = pd.read_csv(demo_run / "results/experiments/cgan_resnet50v2_deit/"
                                         "predictions.csv")
    test = predictions[predictions["split"] == "test"]
    assert balanced_accuracy_score(test["label"], test["pred"]) > 1 / len(CLASSES) + 0.3


def test_adding_an_experiment_is_a_config_edit(demo_run, tmp_path):
    extra = tmp_path / "more.yaml"
    extra.write_text(yaml.safe_dump({"experiments": [
        *DEMO_EXPERIMENTS,
        {"name": "cgan_small_head", "balance": "cgan", "model": "resnet50v2_deit",
         "overrides": {"bottleneck": 32}}]}))
    jobs = planned_jobs(demo_run, "--profile", "profiles/demo", "--configfile",
                        "profiles/demo/demo.yaml", str(extra))
    assert jobs == {"train_classifier": 1, "predict": 1, "evaluate": 1,  # the new one
                    "compare": 1, "report": 1, "all": 1}  # and what gathers every experiment


@pytest.mark.parametrize("experiment", ["cgan_resnet50v2_deit", "strong_baseline"])
def test_command_line_predict_matches_the_pipeline(demo_run, tmp_path, experiment):
    """`dermflow predict` on raw files repeats the pipeline's preparation exactly, and the
    experiment's test-time augmentation (the strong baseline's: flip)."""
    folder = demo_run / "results/experiments" / experiment
    test = pd.read_csv(folder / "predictions.csv").query("split == 'test'").head(3)
    raw = demo_run / "resources/demo/HAM10000_images_part_1"
    out = tmp_path / "cli.csv"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dermflow")), "predict", str(folder / "model.pt"),
         *[str(raw / f"{i}.jpg") for i in test["image_id"]], "--out", str(out),
         "--config", str(demo_run / "config.yaml"), str(demo_run / "profiles/demo/demo.yaml")],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cli = pd.read_csv(out)
    columns = [f"prob_{dx}" for dx in CLASSES]
    assert np.allclose(cli[columns].to_numpy(), test[columns].to_numpy(), atol=1e-3)
    assert list(cli["pred"]) == [CLASSES[k] for k in test["pred"]]


def test_command_line_predict_prepares_images_as_the_model_was_trained(demo_run, tmp_path):
    """Without --config the model's own record decides hair removal and size; a config that
    disagrees with it is refused, naming the keys (issue 18, bug 6)."""
    folder = demo_run / "results/experiments/cgan_resnet50v2_deit"
    test = pd.read_csv(folder / "predictions.csv").query("split == 'test'").head(2)
    images = [str(demo_run / "resources/demo/HAM10000_images_part_1" / f"{i}.jpg")
              for i in test["image_id"]]
    dermflow = str(Path(sys.executable).with_name("dermflow"))
    out = tmp_path / "own.csv"
    proc = subprocess.run([dermflow, "predict", str(folder / "model.pt"), *images, "--out",
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    columns = [f"prob_{dx}" for dx in CLASSES]
    assert np.allclose(pd.read_csv(out)[columns].to_numpy(), test[columns].to_numpy(),
                       atol=1e-3)
    wrong = subprocess.run([dermflow, "predict", str(folder / "model.pt"), *images, "--config",
                            str(demo_run / "config.yaml")], capture_output=True, text=True)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "hair_removal.kernel_size (model 9, config 17)" in wrong.stderr
    assert "image_size (model 32, config 224)" in wrong.stderr


def test_killed_training_resumes_to_the_same_model(demo_run, tmp_path):
    """Snakemake killed mid-training, then unlocked and rerun: the job resumes from its last
    epoch checkpoint and ends with the model the uninterrupted demo run trained. (The
    demo's cheapest network: paper 001's DenseNet121 hybrid, two one-stage epochs.)"""
    name = "none_cnn_densenet121"
    workdir = tmp_path / "w"
    shutil.copytree(demo_run, workdir, symlinks=True)
    model = f"results/experiments/{name}/model.pt"
    checkpoint = workdir / f"results/checkpoints/train_classifier_{name}/single.pt"
    proc = subprocess.Popen(
        [SNAKEMAKE, "--profile", "profiles/demo", "--force", model], cwd=workdir,
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), "training never checkpointed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (workdir / model).exists()

    # what a user does after Snakemake itself was killed: unlock, then rerun
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--profile", "profiles/demo", model, "--rerun-incomplete")
    assert "resuming from" in (workdir / f"logs/train_classifier_{name}.log").read_text()
    ours = torch.load(workdir / model, weights_only=True)["state_dict"]
    reference = torch.load(demo_run / model, weights_only=True)["state_dict"]
    for key, value in reference.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
