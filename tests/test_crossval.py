"""Joining a cross-validated experiment's runs, and the corrected resampled t-test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dermflow.errors import DatasetError
from dermflow.evaluation.crossval import cross_predict, join_runs, run_scores
from dermflow.evaluation.significance import corrected_t_test

CLASSES = ("a", "b")


def run(fold: int, seed: int, val_ids: list[str], test_ids: list[str]) -> pd.DataFrame:
    """One run's predictions: its validation fold, and the shared test images."""
    rng = np.random.default_rng([fold, seed])
    ids = val_ids + test_ids
    p = rng.random(len(ids))
    return pd.DataFrame({"image_id": ids, "lesion_id": ids,
                         "split": ["val"] * len(val_ids) + ["test"] * len(test_ids),
                         "source": "real", "dx": "a", "label": 0, "prob_a": p, "prob_b": 1 - p})


FOLDS = [["v0", "v1"], ["v2", "v3"], ["v4"]]
TEST = ["t0", "t1", "t2"]


def test_out_of_fold_rows_cover_every_image_once_averaged_over_seeds():
    runs = {(f, s): run(f, s, ids, TEST) for f, ids in enumerate(FOLDS) for s in range(2)}
    joined = join_runs(runs).set_index(["split", "image_id"])
    oof = joined.loc["oof"]
    assert sorted(oof.index) == ["v0", "v1", "v2", "v3", "v4"]
    for f, ids in enumerate(FOLDS):
        seeds = [runs[(f, s)].set_index("image_id").loc[ids, "prob_a"] for s in range(2)]
        assert oof.loc[ids, "prob_a"].to_numpy() == pytest.approx((seeds[0] + seeds[1]) / 2)


def test_the_ensemble_is_the_mean_of_every_run_on_the_test_images():
    runs = {(f, s): run(f, s, ids, TEST) for f, ids in enumerate(FOLDS) for s in range(2)}
    joined = join_runs(runs)
    test = joined[joined["split"] == "test"].set_index("image_id")
    every = np.mean([r.set_index("image_id").loc[TEST, "prob_a"] for r in runs.values()], 0)
    assert test.loc[TEST, "prob_a"].to_numpy() == pytest.approx(every)
    assert (test["pred"] == (test["prob_b"] > test["prob_a"]).astype(int)).all()


def test_an_image_validated_by_two_folds_is_an_error():
    runs = {(0, 0): run(0, 0, ["v0", "v1"], TEST), (1, 0): run(1, 0, ["v1"], TEST)}
    with pytest.raises(DatasetError, match="more than one fold: v1"):
        join_runs(runs)


FILES = {(f, s): f"fold{f}/seed{s}/predictions.csv" for f in range(3) for s in range(2)}


@pytest.mark.parametrize(("fold", "seed_1_val", "wrong"), [
    (0, ["v0"], "1 missing, 0 extra, e.g. v1"),  # a seed that lost a validation row
    (0, ["v0", "v1", "v9"], "0 missing, 1 extra, e.g. v9"),  # one that gained one
    (2, ["v4", "v4"], "predicts v4 \\(val\\) twice")])
def test_seeds_of_a_fold_must_validate_on_the_same_rows(fold, seed_1_val, wrong):
    """Averaging over seeds aligns rows by image: a seed missing one, or holding another,
    is named by its file, not averaged by whatever rows happen to match."""
    runs = {(f, s): run(f, s, ids, TEST) for f, ids in enumerate(FOLDS) for s in range(2)}
    runs[(fold, 1)] = run(fold, 1, seed_1_val, TEST)
    seed_1 = FILES[(fold, 1)]
    with pytest.raises(DatasetError, match=f"{seed_1}.*{wrong}.*rerun"):
        join_runs(runs, FILES)


def test_runs_tested_on_different_images_are_named():
    runs = {(f, s): run(f, s, ids, TEST) for f, ids in enumerate(FOLDS) for s in range(2)}
    runs[(1, 0)] = run(1, 0, FOLDS[1], [*TEST, "t3"])
    with pytest.raises(DatasetError, match="fold1/seed0/predictions.csv and fold0/seed0/"
                       "predictions.csv predict different test and external images "
                       r"\(0 missing, 1 extra, e.g. t3\)"):
        join_runs(runs, FILES)


def test_run_scores_name_the_validation_images_so_runs_pair_up():
    a = run(0, 0, ["v0", "v1"], TEST)
    metrics = {"train_images": {"real": 8, "synthetic": 4}}
    first, again = run_scores(0, 0, a, metrics), run_scores(0, 1, a.iloc[::-1], metrics)
    assert first["n_val"] == 2 and first["n_train"] == 8
    assert first["val_digest"] == again["val_digest"]
    assert run_scores(0, 0, run(0, 0, ["v0"], TEST), metrics)["val_digest"] != first["val_digest"]


def test_runs_of_one_fold_count_the_same_real_training_images_whatever_their_balance():
    """The t-test's n_val / n_train is the share of real data held out: a C'GAN set's
    synthetic images or oversampling's repeats must not shrink it (K = 3: 1/2, not 1/4)."""
    a = run(0, 0, ["v0", "v1"], TEST)
    counts = [run_scores(0, 0, a, {"train_images": images})["n_train"] for images in (
        {"real": 8}, {"real": 8, "synthetic": 9}, {"real": 8, "repeat": 5},
        {"real": 8, "augmented": 9})]
    assert counts == [8, 8, 8, 8]


def test_corrected_t_test_against_a_hand_computed_case():
    """d = (0.02, 0.05, -0.01, 0.04, 0.03): mean 0.026, s^2 = 0.00053; with n_val/n_train =
    200/800 the variance is (1/5 + 1/4) s^2 = 0.0002385, se = 0.015443, t = 1.6835 on 4
    degrees of freedom: two-sided p = 0.1676; t(0.975, 4) = 2.7764 gives 0.026 +- 0.04288.
    The naive test (variance s^2 / 5) would say t = 2.525, p = 0.065: too optimistic."""
    got = corrected_t_test(np.array([0.02, 0.05, -0.01, 0.04, 0.03]), 200, 800)
    assert got["difference"] == pytest.approx(0.026)
    assert got["p_value"] == pytest.approx(0.1676, abs=5e-4)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((0.026 - 0.04288, 0.026 + 0.04288),
                                                            abs=5e-5)
    assert got["share_a_better"] == pytest.approx(0.8)
    assert np.isnan(corrected_t_test(np.array([0.1]), 1, 4)["p_value"])  # one run: no test


def test_the_joined_metrics_carry_each_runs_training_budget(tmp_path):
    """The report states each experiment's budget: per run, and summed over the runs."""
    runs = {}
    for fold, ids in enumerate(FOLDS[:2]):
        paths = (tmp_path / f"p{fold}.csv", tmp_path / f"m{fold}.json")
        run(fold, 0, ids, TEST).to_csv(paths[0], index=False)
        paths[1].write_text(json.dumps({
            "experiment": "x", "train_images": {"real": 8}, "best_epoch": 1,
            "training_seconds": 1.0, "images_per_s": 5.0, "epoch_images": 64,
            "epochs_trained": 3, "optimizer_steps": 12, "images_seen": 192 + fold}))
        runs[(fold, 0)] = tuple(map(str, paths))
    cross_predict(runs, out_predictions=str(tmp_path / "p.csv"),
                  out_runs=str(tmp_path / "r.csv"), out_metrics=str(tmp_path / "m.json"))
    joined = json.loads((tmp_path / "m.json").read_text())
    assert joined["optimizer_steps"] == 24 and joined["images_seen"] == 385
    assert [r["optimizer_steps"] for r in joined["per_run"]] == [12, 12]
    assert [r["epoch_images"] for r in joined["per_run"]] == [64, 64]
