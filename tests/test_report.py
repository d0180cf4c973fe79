"""The leakage audit and the ablation table, on small hand-made inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermflow.evaluation.headline import leakage_line, quarantine_summary
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
    assert line.startswith("**Leakage: yes** (protocol grouped): 0 lesions in several splits, "
                           "0 synthetic or augmented images in val/test, 3 near-duplicate")
    assert "datasets cgan, none)" in line  # 3 pairs of the same real images, not 6
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
    assert summary == ("dataset: 0 (results/data/quarantine.csv); external test set: 3 "
                       "(1 missing_file, 2 unreadable; results/external/quarantine.csv)")
