"""The synthetic-image checks: metrics, LPIPS offline, nearest neighbours and the gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_WEIGHTS
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from dermflow.gan.fidelity import distribution_metrics, extractor, features, frechet_distance
from dermflow.gan.memorisation import nearest_real
from dermflow.gan.perceptual import ALEXNET_FILE, load_lpips, lpips_distance
from dermflow.gan.quality import gate
from dermflow.models import backbones
from dermflow.models.io import save_model


def test_distribution_metrics_separate_near_from_far():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(200, 16, generator=gen, dtype=torch.float64)
    same = torch.randn(200, 16, generator=gen, dtype=torch.float64)
    shifted = same + 3.0
    near = distribution_metrics(same, real, seed=0)
    far = distribution_metrics(shifted, real, seed=0)
    assert near["fid"] < 2 < 100 < far["fid"]
    assert near["kid_mean"] < far["kid_mean"]
    assert near["precision"] > 0.6 and near["recall"] > 0.6
    assert far["precision"] < 0.1 and far["recall"] < 0.1


def test_frechet_distance_by_hand():
    # a: points (0,0), (2,0): mean (1,0), covariance diag(2, 0); b: (1,1), (1,3): mean (1,2),
    # covariance diag(0, 2). |mu_a - mu_b|^2 = 4, traces 2 + 2, S_a S_b = 0: FID = 8
    a = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    assert frechet_distance(a, b) == pytest.approx(8.0)
    # the same shape moved: only the means differ, by (3, 4)
    assert frechet_distance(a, a + torch.tensor([3.0, 4.0])) == pytest.approx(25.0, abs=1e-9)


@pytest.mark.parametrize("n, m, d", [(40, 30, 256), (300, 200, 64)])  # fewer, more than d
def test_frechet_distance_is_torch_fidelitys_fid(n, m, d):
    gen = torch.Generator().manual_seed(n)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64) + 0.3
    b = torch.randn(m, d, generator=gen, dtype=torch.float64) * 1.2
    library = fid_statistics_to_metric(fid_features_to_statistics(a),
                                       fid_features_to_statistics(b), verbose=False)
    assert frechet_distance(a, b) == pytest.approx(library["frechet_inception_distance"],
                                                   rel=1e-6)


def test_nearest_real_is_found_by_cosine_similarity():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    synthetic = torch.tensor([[0.1, 5.0], [3.0, 2.9], [2.0, 0.1]])
    index, distance = nearest_real(synthetic, real, chunk=2)
    assert index.tolist() == [1, 2, 0]
    assert (distance >= 0).all() and distance.max() < 0.01


REPORT = {"spaces": {"baseline": {"overall": {"fid": 12.0, "precision": 0.4}},
                     "inception": {"available": False}},
          "lpips": {"diversity": 0.2}, "memorisation": {"near_copy_fraction": 0.0}}


def test_gate_passes_fails_and_skips_what_is_unavailable():
    verdict = gate(REPORT, {"fid_baseline_max": 20, "lpips_diversity_min": 0.1,
                            "fid_inception_max": 50, "recall_baseline_min": None}, "fail")
    assert verdict["passed"] and verdict["failed"] == []
    statuses = {c["name"]: c["status"] for c in verdict["checks"]}
    assert statuses == {"fid_baseline_max": "passed", "lpips_diversity_min": "passed",
                        "fid_inception_max": "skipped (metric unavailable)"}
    verdict = gate(REPORT, {"fid_baseline_max": 10, "precision_baseline_min": 0.5,
                            "near_copy_fraction_max": 0.0}, "warn")
    assert not verdict["passed"] and verdict["on_fail"] == "warn"
    assert verdict["failed"] == ["fid_baseline_max", "precision_baseline_min"]


@pytest.mark.skipif(not (SHARED_WEIGHTS / ALEXNET_FILE).is_file(),
                    reason="needs the offline AlexNet backbone in ../shared/weights")
def test_lpips_runs_offline_from_the_local_backbone():
    metric = load_lpips(SHARED_WEIGHTS, torch.device("cpu"))
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    noisy = (a.int() + torch.from_numpy(rng.integers(-20, 21, a.shape))).clamp(0, 255).to(
        torch.uint8)
    other = torch.from_numpy(rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)).flip(0)
    assert lpips_distance(metric, a, a).abs().max() < 1e-6
    assert (lpips_distance(metric, a, noisy) < lpips_distance(metric, a, other)).all()


@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("baseline") / "model.pt"
    torch.manual_seed(0)
    model = backbones.create("resnetv2_50", num_classes=7)
    save_model(model.eval(), path, architecture="resnetv2_50", classes=list("abcdefg"),
               image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return str(path)


def test_baseline_network_is_a_torch_fidelity_feature_extractor(baseline_file):
    ext = extractor("baseline", baseline_model=baseline_file, weights_dir=None,
                    device=torch.device("cpu"))
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    found = features(ext, images, np.array([4, 0, 0]), device=torch.device("cpu"), batch_size=2)
    assert found.shape == (3, 2048)
    assert torch.allclose(found[1], found[2], atol=1e-4)
    assert not torch.allclose(found[0], found[1], atol=1e-2)


def test_inception_reads_the_local_weights_file(tmp_path):
    (tmp_path / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="(?i)pickle|load|invalid|magic"):
        extractor("inception", baseline_model="", weights_dir=str(tmp_path),
                  device=torch.device("cpu"))
