"""FID, KID and precision/recall in two feature spaces: features, KID and precision/recall
through torch-fidelity; FID by ``frechet_distance`` (torch-fidelity's value, computed exactly
and without a d x d matrix square root).

``inception``: torch-fidelity's standard InceptionV3 (the numbers papers report),
from a local weights file or downloaded; unavailable offline without the file.
``baseline``: the pipeline's own baseline network, registered with torch-fidelity
as feature extractor ``dermflow-baseline`` (its pooled pre-logit features). It is
always available, but its numbers are only comparable within this pipeline.

Features are extracted once per image set; the metrics for the whole set and
for each class are computed from slices of them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from dermflow.models.io import load_model

log = logging.getLogger(__name__)

BASELINE_EXTRACTOR = "dermflow-baseline"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's own file name
NEIGHBOURHOOD = 3  # torch-fidelity's default k for precision/recall


class BaselineFeatures(FeatureExtractorBase):
    """The baseline's pooled pre-logit features for uint8 images (torch-fidelity's input)."""

    def __init__(self, name: str, features_list: list[str],
                 feature_extractor_weights_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"{name} needs feature_extractor_weights_path: the baseline model")
        model, meta = load_model(feature_extractor_weights_path, torch.device("cpu"),
                                 rule="train_baseline")
        self.model, self.size = model.float(), int(meta["image_size"])
        self.register_buffer("mean", torch.tensor(meta["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(meta["std"]).view(1, 3, 1, 1))

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("pre_logits",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "pre_logits"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        raise NotImplementedError("dermflow-baseline is not compiled")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = x.float() / 255
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return (features.flatten(1).float(),)


if BASELINE_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(BASELINE_EXTRACTOR, BaselineFeatures)


class Uint8Images(Dataset):
    """Rows of an N x H x W x 3 uint8 array as the 3 x H x W uint8 tensors torch-fidelity takes."""

    def __init__(self, images: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.images = images
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[self.rows[i]])).permute(2, 0, 1)


def extractor(space: str, *, baseline_model: str, weights_dir: str | None,
              device: torch.device) -> FeatureExtractorBase:
    """The feature extractor of a space; inception raises when its weights cannot be had."""
    cuda = device.type == "cuda"
    if space == "baseline":
        return create_feature_extractor(BASELINE_EXTRACTOR, ["pre_logits"], cuda=cuda,
                                        feature_extractor_weights_path=baseline_model,
                                        verbose=False)
    local = Path(weights_dir) / INCEPTION_FILE if weights_dir else None
    path = str(local) if local is not None and local.is_file() else None
    return create_feature_extractor("inception-v3-compat", ["2048"], cuda=cuda,
                                    feature_extractor_weights_path=path, verbose=False)


def features(extractor_: FeatureExtractorBase, images: np.ndarray, rows: np.ndarray | None,
             *, device: torch.device, batch_size: int) -> torch.Tensor:
    """N x D features of the chosen rows (torch-fidelity's batching, no worker processes)."""
    found = get_featuresdict_from_dataset(Uint8Images(images, rows), extractor_, batch_size,
                                          cuda=device.type == "cuda", save_cpu_ram=True,
                                          verbose=False)
    return found[extractor_.get_requested_features_list()[0]].double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n x d and m x d): FID.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))`` with the unbiased
    covariances S = C^T C / (n - 1) of the centred features C, as torch-fidelity computes it.
    The last trace is the sum of the singular values of C_a C_b^T / sqrt((n - 1)(m - 1))
    (their squares are the eigenvalues of S_a S_b), and those are the singular values of
    R_a R_b^T, R the triangular factor of C = QR: a matrix of at most min(n, d) x min(m, d).
    Why not torch-fidelity's own: it takes scipy's square root of the d x d product, about
    2 s of CPU per 2048-d set (the quality check scores the whole set and each class),
    and that product is singular whenever a set has fewer images than dimensions.
    """
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    centred_a, centred_b = a - mean_a, b - mean_b
    dof_a, dof_b = len(a) - 1, len(b) - 1
    cross = torch.linalg.svdvals(torch.linalg.qr(centred_a, mode="r").R
                                 @ torch.linalg.qr(centred_b, mode="r").R.T)
    return float((mean_a - mean_b).square().sum()
                 + centred_a.square().sum() / dof_a + centred_b.square().sum() / dof_b
                 - 2 * cross.sum() / math.sqrt(dof_a * dof_b))


def distribution_metrics(synthetic: torch.Tensor, real: torch.Tensor, *, seed: int,
                         kid_subsets: int = 100) -> dict[str, float]:
    """FID, KID (mean, std over ``kid_subsets`` subsets of up to 1000 images: torch-fidelity's
    default 100, fewer where only a scale is wanted) and precision/recall/F."""
    subset = min(1000, len(synthetic), len(real))
    kid = kid_features_to_metric(synthetic, real, kid_subset_size=subset, kid_subsets=kid_subsets,
                                 rng_seed=seed, verbose=False)
    prc = prc_features_to_metric(synthetic, real, prc_neighborhood=NEIGHBOURHOOD, verbose=False)
    return {"fid": frechet_distance(synthetic, real),
            "kid_mean": kid["kernel_inception_distance_mean"],
            "kid_std": kid["kernel_inception_distance_std"],
            "precision": prc["precision"], "recall": prc["recall"], "f_score": prc["f_score"]}
