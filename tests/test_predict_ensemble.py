"""``dermflow predict`` on a cross-validated experiment's fold models: the same averaging as the
pipeline's fold ensemble (dermflow.evaluation.crossval), so what a user deploys is what the
study evaluated."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from dermflow.cli import main
from dermflow.data.preparation import HAIR_KEYS
from dermflow.errors import DermflowError
from dermflow.evaluation.crossval import join_runs
from dermflow.experiments.predict import predict_files
from dermflow.models import backbones
from dermflow.torchfile import save_model

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
CPU = torch.device("cpu")
PREPARATION = {"hair_removal": {**dict.fromkeys(HAIR_KEYS, 0), "enabled": False},
               "image_size": 16}


def fold_models(root: Path, k: int = 3, name: str = "cgan") -> list[Path]:
    """K tiny untrained networks saved as one experiment's fold models, as the DAG lays them
    out (results/cv/fold{f}/experiments/NAME/seed0/model.pt)."""
    paths = []
    for fold in range(k):
        torch.manual_seed(fold)
        model = backbones.create("test_resnet", num_classes=len(CLASSES))
        path = root / f"cv/fold{fold}/experiments/{name}/seed0/model.pt"
        path.parent.mkdir(parents=True)
        save_model(model, path, kind="baseline", architecture="test_resnet", task="multiclass",
                   classes=CLASSES, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                   settings={"tta": "flip"}, name=name, preparation=PREPARATION)
        paths.append(path)
    return paths


def images(root: Path, n: int = 5) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def test_predict_on_fold_models_is_the_crossval_ensemble(tmp_path):
    models, files = fold_models(tmp_path), images(tmp_path)
    singles = [predict_files(m, files, device=CPU) for m in models]
    prob = [f"prob_{c}" for c in CLASSES]
    assert not np.allclose(singles[0][prob], singles[1][prob])  # the folds differ
    runs = {}  # each run as cross_predict reads it: its own val image, the shared test images
    for fold, single in enumerate(singles):
        rows = single.assign(image_id=single["path"], lesion_id=single["path"], split="test",
                             source="real", dx="nv", label=5)
        val = rows.iloc[[0]].assign(image_id=f"val{fold}", split="val")
        runs[(fold, 0)] = pd.concat([val, rows], ignore_index=True)
    joined = join_runs(runs)
    study = joined[joined["split"] == "test"].set_index("image_id").loc[files, prob]
    by_hand = (singles[0][prob].to_numpy() + singles[1][prob].to_numpy()
               + singles[2][prob].to_numpy()) / 3  # each fold model counts once
    np.testing.assert_allclose(study.to_numpy(), by_hand, rtol=1e-6)
    deployed = predict_files(models, files, device=CPU)
    np.testing.assert_allclose(deployed[prob].to_numpy(), by_hand, rtol=1e-6)
    assert list(deployed["pred"]) == [CLASSES[k] for k in by_hand.argmax(1)]
    out = tmp_path / "out.csv"  # the command line: the folders of the folds, as a glob gives
    folders = [str(p.parent.parent) for p in models]
    assert main(["predict", *folders, *files, "--out", str(out)]) == 0
    np.testing.assert_allclose(pd.read_csv(out)[prob].to_numpy(), by_hand, rtol=1e-6)
    assert main(["predict", str(models[0]), str(models[1]), files[0], "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 1


def test_models_of_different_experiments_are_not_averaged(tmp_path, capsys):
    mixed = [*fold_models(tmp_path, 1, "cgan"), *fold_models(tmp_path / "b", 1, "augment")]
    with pytest.raises(DermflowError, match="name 'augment', but .* has 'cgan'"):
        predict_files(mixed, images(tmp_path, 1), device=CPU)
    assert main(["predict", str(tmp_path / "cv"), str(tmp_path / "img0.png")]) == 0
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), str(tmp_path / "img0.png")]) == 1
    assert "empty: no model file (*.pt) below this folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "img0.png"), str(tmp_path / "img0.png")]) == 1
    assert "img0.png: not a model file" in capsys.readouterr().err
