"""Cross-validation through the DAG: three lesion-grouped folds of the demo data, each running
the whole learning chain on its own training part, two experiments, their joined runs, the
corrected comparisons and the report.

The fold DAG runs on its own (beside the demo run when tests run on two workers); the
rerun test plans the switch from the finished demo run to cv.folds: 3: nothing upstream of
the split runs again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import demo_args, fresh_run, planned_jobs

from dermflow.data.split import make_split, split_fractions
from dermflow.labels import CLASSES

pytestmark = pytest.mark.workflow
K = 3
NAMES = ("cgan_resnet18", "none_resnet18")
CV_CONFIG = {  # what the folds do matters here, not how well: ResNet-18s, a few epochs
    "cv": {"folds": K},
    "baseline": {"model": "resnet18", "epochs": 2}, "attention": {"samples": 2},
    "gan": {"epochs": 2}, "quality": {"lpips_pairs": 20},
    "classifier": {"epochs": 2},
    "experiments": [{"name": name, "balance": name.split("_")[0], "model": "resnet18",
                     "overrides": {"lr_warmup_epochs": 1}} for name in NAMES],
    "report": {"comparisons": [list(NAMES)], "bootstrap": 200},
}
ARGS = demo_args("cv.yaml")


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory) -> Path:
    """The demo profile with three folds, run to the end."""
    return fresh_run(tmp_path_factory, "cv", CV_CONFIG)


def fold_file(workdir: Path, fold: int, path: str) -> pd.DataFrame:
    return pd.read_csv(workdir / f"results/cv/fold{fold}" / path)


def test_switching_to_folds_reruns_nothing_upstream_of_the_split(demo_run, tmp_path):
    (tmp_path / "cv.yaml").write_text(yaml.safe_dump(CV_CONFIG))
    jobs = planned_jobs(demo_run, *demo_args(str(tmp_path / "cv.yaml")))
    assert not {"validate_dataset", "remove_hair", "cache_images", "prepare_external"} & set(jobs)
    assert jobs["split_folds"] == 1 and jobs["fold_split"] == K
    assert jobs["train_baseline"] == jobs["train_gan"] == K  # grouped: a chain per fold
    assert jobs["train_classifier"] == K * len(NAMES)


def test_a_finished_fold_dag_reruns_nothing(cv_run):
    assert planned_jobs(cv_run, *ARGS) == {}


def test_folds_are_lesion_disjoint_class_complete_and_validate_every_image_once(cv_run):
    workdir = cv_run
    folds = pd.read_csv(workdir / "results/cv/folds.csv")
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())["split"]
    today = make_split(pd.read_csv(workdir / "results/data/manifest.csv"), "grouped",
                       split_fractions(cfg), cfg["seed"])  # cv.folds: 1
    assert set(folds.loc[folds["fold"] == "test", "image_id"]) == set(
        today.loc[today["split"] == "test", "image_id"])  # the same test split as today
    assert folds.groupby("lesion_id")["fold"].nunique().max() == 1
    seen: list[str] = []
    for f in range(K):
        split = fold_file(workdir, f, "split/split.csv")
        for part in ("train", "val", "test"):
            assert set(split.loc[split["split"] == part, "dx"]) == set(CLASSES), (f, part)
        seen += list(split.loc[split["split"] == "val", "image_id"])
    assert sorted(seen) == sorted(folds.loc[folds["fold"] != "test", "image_id"])


def test_nothing_a_fold_learns_from_saw_its_validation_fold_or_the_test_split(cv_run):
    workdir = cv_run
    for f in range(K):
        split = fold_file(workdir, f, "split/split.csv").set_index("image_id")["split"]
        train = set(split.index[split == "train"])
        pool = fold_file(workdir, f, "attention/index.csv")
        assert set(pool.loc[pool["in_pool"], "image_id"]) == train  # baseline and GAN pool
        manifest = fold_file(workdir, f, "synthetic/manifest.csv")
        assert set(manifest["source_image_id"]) <= train  # synthetic images from train only
        for balance in ("cgan", "none"):
            dataset = fold_file(workdir, f, f"datasets/{balance}/dataset.csv")
            learnt = dataset[dataset["split"] == "train"]
            assert set(learnt.loc[learnt["source"] == "real", "image_id"]) <= train
            assert (dataset.loc[dataset["split"] != "train", "source"] == "real").all()


def test_out_of_fold_and_ensemble_predictions(cv_run):
    workdir = cv_run
    folds = pd.read_csv(workdir / "results/cv/folds.csv")
    for name in NAMES:
        joined = pd.read_csv(workdir / f"results/cv/experiments/{name}/predictions.csv")
        oof = joined[joined["split"] == "oof"]
        assert sorted(oof["image_id"]) == sorted(folds.loc[folds["fold"] != "test", "image_id"])
        runs = [fold_file(workdir, f, f"experiments/{name}/seed0/predictions.csv")
                for f in range(K)]
        prob = [c for c in joined.columns if c.startswith("prob_")]
        for split in ("test", "external"):
            mean = sum(r[r["split"] == split].set_index("image_id")[prob] for r in runs) / K
            got = joined[joined["split"] == split].set_index("image_id")[prob]
            np.testing.assert_allclose(got.loc[mean.index].to_numpy(), mean.to_numpy(),
                                       rtol=1e-6)
        for f, r in enumerate(runs):  # each fold's own validation rows, unaveraged
            val = r[r["split"] == "val"].set_index("image_id")[prob]
            np.testing.assert_allclose(oof.set_index("image_id").loc[val.index, prob],
                                       val.to_numpy(), rtol=1e-6, err_msg=f"fold {f}")


def test_evaluation_comparisons_and_report_show_cross_validation(cv_run):
    workdir = cv_run
    evaluation = json.loads(
        (workdir / f"results/cv/experiments/{NAMES[0]}/evaluation.json").read_text())
    cv = evaluation["cv"]
    assert len(cv["runs"]) == K and {"mean", "sd"} <= set(cv)
    ci = cv["oof"]["bootstrap"]["overall"]["balanced_accuracy"]
    assert ci["ci_low"] <= cv["oof"]["overall"]["balanced_accuracy"] <= ci["ci_high"]
    assert "external" in evaluation
    table = pd.read_csv(workdir / "results/report/comparisons.csv")
    declared = table[table["scope"] == "declared"]
    assert set(declared["split"]) == {"oof", "test", "external", "cv runs"}
    t_test = declared[declared["method"] == "corrected resampled t-test"]
    assert (t_test["resamples"] == K).all() and t_test["share_a_better"].between(0, 1).all()
    tested = declared[declared["note"].isna()]  # a tiny test split's class averages: noted
    assert (tested["p_holm"] >= tested["p_value"]).all()
    assert tested["split"].isin(["oof", "cv runs"]).any()
    rst = (workdir / "results/report/workflow.rst").read_text()
    assert "**Best** (out-of-fold balanced accuracy)" in rst and "-fold cross-validation" in rst
    tables = (workdir / "results/report/tables.html").read_text()
    assert "CV balanced accuracy" in tables and "CV → test" in tables
    summary = fold_file(workdir, 1, "summary.csv")
    assert set(summary["experiment"]) == set(NAMES) and (summary["fold"] == 1).all()
