"""predict: an experiment's class probabilities on val, test and the external test set, with
saliency maps for a few test images; and ``dermflow predict`` on new image files, prepared as
the pipeline prepared its own, by one model or by a cross-validated experiment's fold models
(their probabilities averaged as the pipeline's fold ensemble averages them). Probabilities
are averaged over the test-time augmentation views of the experiment's ``tta`` setting
(dermflow.training.tta)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermflow.atomic import write_csv
from dermflow.data.cache import load_dataset, read_array
from dermflow.data.preparation import differences, prepare, recipe
from dermflow.data.validate import MIN_SIDE, check_image
from dermflow.ensemble import ensemble_mean
from dermflow.errors import DatasetError, DermflowError
from dermflow.experiments.saliency import attention_maps, grad_cam, plot_saliency
from dermflow.labels import labels_by_position, task_labels
from dermflow.models.freezing import FreezableClassifier
from dermflow.models.io import load_model
from dermflow.training.batches import ImageTensor
from dermflow.training.loop import predict

log = logging.getLogger(__name__)


def with_probabilities(rows: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """``rows`` plus a ``prob_<class>`` column per class and the arg-max ``pred``."""
    out = rows.assign(**{f"prob_{dx}": probs[:, k] for k, dx in enumerate(classes)})
    out["pred"] = probs.argmax(1)
    return out


def model_tta(meta: dict[str, Any]) -> str:
    """The test-time augmentation a saved model was trained to be predicted with (none for
    model files from before the ``tta`` setting)."""
    return meta.get("settings", {}).get("tta", "none")


def predict_external(model: FreezableClassifier, meta: dict[str, Any], cache_npy: str,
                     index_csv: str, *, device: torch.device, precision: str,
                     batch_size: int, tta: str = "none") -> pd.DataFrame:
    """Prediction rows (split ``external``) for the external test set's image cache."""
    images = read_array(cache_npy, rule="prepare_external")
    index = pd.read_csv(index_csv)
    labels = task_labels(index["dx"].to_numpy(), meta["task"])
    data = ImageTensor(images, labels, device, meta["mean"], meta["std"])
    probs = predict(model, data, np.arange(len(index)), batch_size, precision, tta)
    rows = index[["image_id", "lesion_id", "dx"]].assign(label=labels, split="external",
                                                         source="real", pos=-1)
    return with_probabilities(rows, probs, meta["classes"])


def model_files(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """``dermflow predict``'s arguments split into models and images: the leading ones that
    are ``.pt`` files or folders (every ``.pt`` file below a folder: a cross-validated
    experiment's fold models, ``results/cv/fold*/experiments/NAME``), then the images."""
    models: list[Path] = []
    for k, path in enumerate(map(Path, paths)):
        if path.is_dir():
            found = sorted(path.rglob("*.pt"))
            if not found:
                raise DermflowError(f"{path}: no model file (*.pt) below this folder; give a "
                                    "model file or the folder of an experiment's fold models")
            models += found
        elif path.suffix == ".pt":
            models.append(path)
        elif not models:
            raise DermflowError(f"{path}: not a model file (*.pt) nor a folder of them; give "
                                "the model(s) first, then the images")
        else:
            return models, list(paths[k:])
    raise DermflowError("dermflow predict: no image file after the model(s); give MODEL... "
                        "IMAGE...")


def load_ensemble(paths: Sequence[str | os.PathLike[str]], device: torch.device,
                  ) -> list[tuple[FreezableClassifier, dict[str, Any]]]:
    """The models whose probabilities are averaged, each with its metadata. They must be one
    experiment's runs (name, task, classes and preparation alike): averaging anything else
    would deploy a model the study never evaluated."""
    members = [load_model(path, device) for path in paths]
    first = members[0][1]
    for path, (_, meta) in zip(paths[1:], members[1:], strict=True):
        for key in ("name", "task", "classes", "preparation"):
            if meta.get(key) != first.get(key):
                raise DermflowError(f"{path}: {key} {meta.get(key)!r}, but {paths[0]} has "
                                    f"{first.get(key)!r}; give the fold models of one "
                                    "experiment")
    return members


def predict_files(model_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                  paths: list[str], *, device: torch.device,
                  config: dict[str, Any] | None = None, precision: str = "bf16",
                  batch_size: int = 32, tta: str | None = None) -> pd.DataFrame:
    """Class probabilities for image files, prepared as the model's training images were
    (the preparation recipe its file records, dermflow.data.preparation), with the model's
    own test-time augmentation unless ``tta`` names another. Several model files (one
    experiment's fold models) predict as the fold ensemble: the mean of their probabilities
    (dermflow.ensemble). ``config``, a validated run config, must
    agree with that recipe; a model file too old to carry one is prepared as ``config``
    says.

    Each file is checked as validation checks the dataset's images
    (dermflow.data.validate.check_image, with ``config``'s validation.min_side, else the
    default); one it would set aside, or that cannot be prepared, gets a row with its
    ``problem`` and ``reason`` and no probabilities, so one bad file costs only its own row.
    """
    model_paths = ([model_path] if isinstance(model_path, (str, os.PathLike))
                   else list(model_path))
    members = load_ensemble(model_paths, device)
    first, meta = model_paths[0], members[0][1]
    prepared_as = meta.get("preparation")
    if prepared_as is None:
        if config is None:
            raise DermflowError(f"{first} does not record how its images were prepared "
                                "(a model from an older dermflow): pass the run's config with "
                                "--config")
        prepared_as = recipe(config)
    elif config is not None and (wrong := differences(prepared_as, recipe(config))):
        raise DermflowError(f"--config disagrees with {first} on {'; '.join(wrong)}. The "
                            "model prepares its images as it was trained: drop --config, or "
                            "give the config of the run that trained it")
    min_side = config["validation"]["min_side"] if config is not None else MIN_SIDE
    rows = pd.DataFrame({"path": [str(p) for p in paths], "problem": "", "reason": ""})
    images = {}
    for i, path in enumerate(rows["path"]):
        check = check_image(path, min_side)
        if check.problem is None:
            try:
                images[i] = prepare(path, prepared_as)
            except DatasetError as err:  # OpenCV cannot decode what Pillow could
                check = check._replace(problem="unreadable", reason=str(err))
        if check.problem is not None:
            rows.loc[i, ["problem", "reason"]] = check.problem, check.reason
            log.warning("%s not predicted: %s", path, check.reason)
    probs = np.full((len(rows), len(meta["classes"])), np.nan, np.float32)
    if images:
        good, prepared = np.fromiter(images, np.int64), np.stack(list(images.values()))
        probs[good] = ensemble_mean([
            predict(member, ImageTensor(prepared, np.zeros(len(good), np.int64), device,
                                        member_meta["mean"], member_meta["std"]),
                    np.arange(len(good)), batch_size, precision, tta or model_tta(member_meta))
            for member, member_meta in members])
    out = with_probabilities(rows[["path"]], probs, meta["classes"])
    out["pred"] = [meta["classes"][k] if ok else "" for k, ok in
                   zip(out["pred"], rows["problem"] == "", strict=True)]
    return out.assign(problem=rows["problem"], reason=rows["reason"])


def predict_experiment(model_path: str, dataset_csv: str, cache_npy: str, extra_npy: str | None,
                       *, device: torch.device, precision: str, per_class: int, batch_size: int,
                       out_predictions: str, out_saliency: str,
                       external: tuple[str, str] | None = None) -> pd.DataFrame:
    """Val and test predictions (a probability per class of the experiment's task), the
    external test set's too when given (its cache and index), and saliency maps for a few
    test images."""
    images, table = load_dataset(dataset_csv, cache_npy, extra_npy)
    model, meta = load_model(model_path, device)
    tta = model_tta(meta)
    labels = labels_by_position(table, len(images), meta["task"])
    data = ImageTensor(images, labels, device, meta["mean"], meta["std"])
    rows = table[table["split"].isin(["val", "test"])].reset_index(drop=True)
    rows["label"] = labels[rows["pos"].to_numpy()]
    probs = predict(model, data, rows["pos"].to_numpy(), batch_size, precision, tta)
    columns = ["image_id", "lesion_id", "split", "source", "dx", "label", "pos"]
    out = with_probabilities(rows[columns], probs, meta["classes"])
    if external is not None:
        out = pd.concat([out, predict_external(model, meta, *external, device=device,
                                               precision=precision, batch_size=batch_size,
                                               tta=tta)],
                        ignore_index=True)
    write_csv(out.drop(columns="pos"), out_predictions)
    test = out[out["split"] == "test"]
    chosen = test.groupby("dx", sort=False).head(per_class).sort_values(
        ["label", "dx"], kind="stable")
    x, _ = data.batch(torch.tensor(chosen["pos"].to_numpy()))
    maps = [grad_cam(model, x, torch.tensor(chosen["pred"].to_numpy(), device=device))]
    attention = attention_maps(model, x)
    if attention is not None:
        maps.append(attention)
    plot_saliency(images, maps, chosen, meta["classes"], out_saliency)
    log.info("predicted %d val/test images (test-time augmentation: %s); test accuracy %.3f",
             len(out), tta,
             float((test["pred"] == test["label"]).mean()) if len(test) else float("nan"))
    return out
