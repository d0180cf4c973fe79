"""The leakage audit and the ablation table, on small hand-made inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermflow.evaluation import leakage
from dermflow.evaluation.compare import BOOTSTRAP, COLUMNS
from dermflow.evaluation.headline import (
    data_line,
    interval,
    leakage_line,
    quarantine_summary,
    synthetic_line,
    verdicts,
)
from dermflow.evaluation.leakage import dhash, leakage_audit, near_duplicate_pairs
from dermflow.evaluation.report import ablation_table


def test_near_duplicates_are_found_by_hash_distance():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    copy = np.clip(images[:1].astype(int) + 3, 0, 255).astype(np.uint8)  # slightly brighter
    hashes = dhash(np.concatenate([images, copy]))
    assert near_duplicate_pairs(hashes[4:], hashes[:4], max_bits=4).tolist() == [[0, 0]]
    assert len(near_duplicate_pairs(hashes[1:2], hashes[2:4], max_bits=4)) == 0


def test_leakage_audit_counts_what_the_paper_protocol_leaks(tmp_path):
    rng = np.random.default_rng(1)
    cache = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    extra = cache[[0]].copy()  # an "augmented" near copy of image 0
    np.save(tmp_path / "cache.npy", cache)
    np.save(tmp_path / "extra.npy", extra)
    pd.DataFrame({
        "image_id": ["r0", "r1", "r2", "r3", "AUG_0"],
        "source": ["real"] * 4 + ["augmented"],
        "array": ["cache"] * 4 + ["augmented"], "row": [0, 1, 2, 3, 0],
        "lesion_id": ["L0", "L0", "L1", "L2", "L0"], "dx": ["nv"] * 5, "label": [1] * 5,
        "split": ["train", "test", "train", "val", "test"],
    }).to_csv(tmp_path / "dataset.csv", index=False)
    audit = leakage_audit(str(tmp_path / "dataset.csv"), str(tmp_path / "cache.npy"),
                          str(tmp_path / "extra.npy"), max_bits=2, max_mae=0.01)
    assert audit["lesions_in_several_splits"] == 1  # L0
    assert audit["non_real_in_val_test"] == 1  # AUG_0
    assert audit["near_duplicate_pairs_train_vs_val_test"] == 1  # AUG_0 vs r0
    assert audit["near_duplicates"] == [{"held_out": "AUG_0", "split": "test", "train": "r0",
                                         "mean_abs_difference": 0.0}]


def test_leakage_audit_counts_a_repeated_train_image_once(tmp_path, monkeypatch):
    """``oversample`` repeats train images as extra rows; a test image that is a near copy of
    one of them is one pair, not one per row, and each image is hashed once."""
    rng = np.random.default_rng(2)
    cache = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    cache[1] = np.clip(cache[0].astype(int) + 2, 0, 255)  # test image r1: a near copy of r0
    np.save(tmp_path / "cache.npy", cache)
    pd.DataFrame({
        "image_id": ["r0", "r1", "r2", "REP_0", "REP_1", "REP_2"],
        "source": ["real"] * 3 + ["repeat"] * 3, "array": "cache", "row": [0, 1, 2, 0, 0, 2],
        "lesion_id": ["L0", "L1", "L2", "L0", "L0", "L2"], "dx": "nv", "label": 5,
        "split": ["train", "test", "train", "train", "train", "train"],
    }).to_csv(tmp_path / "dataset.csv", index=False)
    hashed = []
    monkeypatch.setattr(leakage, "dhash", lambda images, rows: hashed.append(len(rows)) or dhash(
        images, rows))
    audit = leakage_audit(str(tmp_path / "dataset.csv"), str(tmp_path / "cache.npy"), None,
                          max_bits=4, max_mae=0.02)
    assert audit["near_duplicate_pairs_train_vs_val_test"] == 1
    assert [(p["held_out"], p["train"]) for p in audit["near_duplicates"]] == [("r1", "r0")]
    assert sum(hashed) == 3  # the three distinct images, not six rows


def test_ablation_table_puts_the_papers_figures_beside_ours():
    per_class = {dx: {"precision": 0.5, "recall": 0.5, "f1": 0.5}
                 for dx in ("bkl", "nv", "df", "mel", "vasc", "bcc", "akiec")}
    overall = {f"{k}_{m}": 0.5 for k in ("macro", "weighted")
               for m in ("precision", "recall", "f1")}
    evaluation = {"per_class": per_class, "overall": {**overall, "accuracy": 0.6},
                  "bootstrap": {"overall": {"accuracy": {"se": 0.01}}}}
    experiments = [{"name": "mine", "balance": "cgan", "model": "resnet50v2_deit"},
                   {"name": "other", "balance": "none", "model": "resnet50v2_deit"}]
    table = ablation_table(experiments, {"mine": evaluation, "other": evaluation},
                           {"mine": {"training_seconds": 120}, "other": {"training_seconds": 60}})
    assert len(table) == 2 * 9
    macro = table[(table["experiment"] == "mine") & (table["class"] == "macro average")].iloc[0]
    assert macro["paper_row"] == "(v)" and macro["paper_f1"] == 0.93
    assert macro["paper_accuracy"] == 0.92 and macro["training_minutes"] == 2
    other = table[(table["experiment"] == "other") & (table["class"] == "macro average")].iloc[0]
    assert other["paper_row"] == "" and pd.isna(other["paper_f1"])


def test_leakage_headline_counts_shared_real_images_once():
    audit = {name: {"lesions_in_several_splits": 0, "non_real_in_val_test": 0,
                    "near_duplicate_pairs_train_vs_val_test": 3} for name in ("cgan", "none")}
    audit["augment"] = {"lesions_in_several_splits": 0, "non_real_in_val_test": 0,
                        "near_duplicate_pairs_train_vs_val_test": 0}
    line = leakage_line(audit, "grouped")
    assert line.startswith("**Leakage: yes** (grouped): 0 lesions in several splits, "
                           "0 synthetic/augmented images in val/test, 3 near-duplicate")
    assert "datasets cgan, none;" in line  # 3 pairs of the same real images, not 6
    assert "listed in `tables.html`_" in line
    clean = {"none": {**audit["augment"]}}
    assert leakage_line(clean, "grouped").startswith("**Leakage: none found**")


def test_quarantine_is_counted_per_image_set_with_its_problems():
    columns = ["image_id", "path", "problem", "reason"]
    data = pd.DataFrame(columns=columns)
    external = pd.DataFrame([("ISIC_1", "", "missing_file", "missing file"),
                             ("ISIC_2", "a.jpg", "unreadable", "not an image"),
                             ("ISIC_3", "b.jpg", "unreadable", "not an image")], columns=columns)
    summary = quarantine_summary({"dataset": ("results/data/quarantine.csv", data),
                                  "external test set": ("results/external/quarantine.csv",
                                                        external)})
    assert summary == ("dataset: 0; external test set: 3 "
                       "(1 missing_file, 2 unreadable; results/external/quarantine.csv)")


def _declared(*rows: tuple) -> pd.DataFrame:
    """comparisons.csv rows: (a, b, split, metric, difference, ci_low, ci_high, p_holm, note)."""
    return pd.DataFrame([{"scope": "declared", "split": split, "method": BOOTSTRAP, "a": a,
                          "b": b, "metric": metric, "difference": d, "ci_low": lo,
                          "ci_high": hi, "p_value": p, "p_holm": p, "note": note}
                         for a, b, split, metric, d, lo, hi, p, note in rows],
                        columns=list(COLUMNS))


def test_each_declared_pair_gets_one_plain_verdict():
    table = _declared(
        ("cgan", "none", "test", "balanced_accuracy", 0.12, 0.04, 0.20, 0.01, None),
        ("cgan", "none", "test", "macro_f1", 0.10, 0.01, 0.19, 0.03, None),
        ("cgan", "none", "external", "balanced_accuracy", 0.02, -0.05, 0.09, 0.40, None),
        ("cgan", "augment", "test", "balanced_accuracy", 0.03, -0.10, 0.16, 0.60, None),
        ("cgan", "augment", "external", "balanced_accuracy", -0.01, -0.1, 0.1, 0.9, None),
        ("cgan", "strong", "test", "balanced_accuracy", None, None, None, None,
         "too few lesions: akiec, df below report.min_lesions = 5"))
    found = verdicts(table)
    assert found == [
        "**cgan vs none:** cgan better on 2 of 3 tests; test balanced accuracy +0.120 (+0.040 "
        "to +0.200, Holm p 0.010).",
        "**cgan vs augment:** no difference (0 of 2 tests hold); test balanced accuracy +0.030 "
        "(-0.100 to +0.160, Holm p 0.600).",
        "**cgan vs strong:** not judged (too few lesions)."]  # the data line names them


def test_a_verdict_never_counts_an_untested_row_and_says_so():
    table = _declared(
        ("a", "b", "test", "balanced_accuracy", -0.2, -0.3, -0.1, 0.002, None),
        ("a", "b", "external", "balanced_accuracy", None, None, None, None,
         "different test sets: not paired"))
    assert verdicts(table) == [
        "**a vs b:** a worse on 1 of 1 tests; 1 not judged: different test sets: not paired; "
        "test balanced accuracy -0.200 (-0.300 to -0.100, Holm p 0.002)."]


def test_the_synthetic_images_line_says_what_the_gate_checked_and_how_many_are_copies():
    def quality(status: str, ran: int, share: float) -> dict:
        return {"gate": {"status": status, "ran": ran, "configured": 3},
                "memorisation": {"near_copy_fraction": share, "near_copy_fraction_max": 0.1}}

    assert synthetic_line([quality("incomplete", 1, 0.51)], "cgan") == (
        "**Synthetic images** (cgan): gate incomplete (1 of 3 checks ran); 51% near copies of "
        "a real image (limit 10%).")
    folds = [quality("failed", 3, 0.999), quality("failed", 3, 0.95), quality("passed", 3, 0.02)]
    empty = {**quality("incomplete", 2, 0.0), "memorisation": {
        "near_copy_fraction": None, "near_copy_fraction_max": 0.1}}
    assert synthetic_line([empty], "cgan").endswith("; no synthetic image was made.")
    assert synthetic_line(folds, "cgan").startswith(
        "**Synthetic images** (cgan): gate failed, passed (3 of 3 checks ran); 2-100% ")


def test_the_data_line_names_the_data_and_the_classes_too_small_to_judge():
    boot = {"clusters": 15, "min_lesions": 5, "too_few_lesions": ["akiec", "df"],
            "overall": {"balanced_accuracy": {"ci_low": 0.4, "ci_high": 0.7,
                                              "too_few_lesions": True}}}
    evaluation = {"n": 36, "bootstrap": boot, "overall": {"balanced_accuracy": 0.55},
                  "external": {"n": 100}}
    data = {"source": "demo", "path": "resources/demo", "image_size": 32,
            "protocol": "grouped", "folds": 1}
    assert data_line(data, {"a": evaluation}) == (
        "generated demo images (not real lesions), 32 px, grouped; test 36 images of 15 "
        "lesions (akiec, df under 5: class averages not judged); external 100 images; one "
        "training run each")
    assert interval(evaluation, "balanced_accuracy") == "0.550 (0.400-0.700, too few lesions)"


def test_a_verdict_says_when_the_two_trained_for_different_budgets():
    table = _declared(("cgan", "none", "test", "balanced_accuracy", 0.3, 0.2, 0.4, 0.002, None))
    found = verdicts(table, {"cgan": 64, "none": 24})
    assert found[0].endswith(" cgan had 2.7x the optimizer steps.")
    assert verdicts(table, {"cgan": 24, "none": 24})[0].endswith("Holm p 0.002).")
