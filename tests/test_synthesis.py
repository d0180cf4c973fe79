"""How many synthetic images per class, from which sources, with which seeds."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from dermflow.config import load_config
from dermflow.errors import DatasetError
from dermflow.gan.plan import plan, synthetic_counts
from dermflow.gan.synthesis import latents
from dermflow.labels import CLASSES

HAM_COUNTS = {"bkl": 1099, "nv": 6705, "df": 115, "mel": 1113, "vasc": 142, "bcc": 514,
              "akiec": 327}  # the paper's Table 2a
PAPER_SYNTHETIC = {"bkl": 2501, "nv": 95, "df": 2385, "mel": 2487, "vasc": 2358, "bcc": 1986,
                   "akiec": 2173}  # the paper's Table 2b


@pytest.fixture
def settings(repo) -> dict:
    return load_config(repo / "config.yaml")["synthesis"]


def test_default_targets_reproduce_table_2b_on_all_of_ham10000(settings):
    assert synthetic_counts(HAM_COUNTS, settings) == PAPER_SYNTHETIC


def test_targets_scale_to_a_smaller_training_pool(settings):
    pool = {dx: round(n * 0.7) for dx, n in HAM_COUNTS.items()}
    counts = synthetic_counts(pool, settings)
    for dx in CLASSES:
        assert counts[dx] == pytest.approx(0.7 * PAPER_SYNTHETIC[dx], abs=3)


def test_explicit_counts_replace_the_targets(settings):
    counts = synthetic_counts(HAM_COUNTS, {**settings, "counts": {"df": 7, "vasc": 3}})
    assert counts == {**dict.fromkeys(CLASSES, 0), "df": 7, "vasc": 3}


def pool_table(per_class: int = 3) -> pd.DataFrame:
    rows = [{"row": 10 * k + i, "image_id": f"ISIC_{k}{i}", "lesion_id": f"HAM_{k}{i}",
             "dx": dx, "label": k} for k, dx in enumerate(CLASSES) for i in range(per_class)]
    return pd.DataFrame(rows)


def test_plan_uses_sources_round_robin_with_one_seed_each():
    counts = {**dict.fromkeys(CLASSES, 0), "df": 7, "mel": 3}
    manifest = plan(pool_table(), counts, seed=1)
    assert manifest["dx"].value_counts().to_dict() == {"df": 7, "mel": 3}
    df_sources = manifest.loc[manifest["dx"] == "df", "source_image_id"].value_counts()
    assert sorted(df_sources) == [2, 2, 3]  # 7 images over 3 sources
    assert manifest["seed"].is_unique and manifest["synthetic_id"].is_unique
    assert (manifest["label"] == manifest["dx"].map(CLASSES.index)).all()
    assert manifest.equals(plan(pool_table(), counts, seed=1))
    assert not manifest["seed"].equals(plan(pool_table(), counts, seed=2)["seed"])


def test_plan_names_a_class_without_sources():
    pool = pool_table()
    with pytest.raises(DatasetError, match="no vasc image"):
        plan(pool[pool["dx"] != "vasc"], {**dict.fromkeys(CLASSES, 0), "vasc": 2}, seed=0)


def test_a_seed_alone_reproduces_its_latent():
    first = latents([3, 4], 8)
    assert torch.equal(first[1], latents([4], 8)[0])
    assert not torch.equal(first[0], first[1])
