"""The synthetic-image checks: metrics, LPIPS offline, nearest neighbours, memory and the gate."""

from __future__ import annotations

import json
import re
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, SHARED_WEIGHTS
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from dermflow.gan import memorisation as memorisation_module
from dermflow.gan import quality
from dermflow.gan.fidelity import distribution_metrics, extractor, features, frechet_distance
from dermflow.gan.memorisation import mean_abs_difference, memorisation, nearest_real
from dermflow.gan.perceptual import ALEXNET_FILE, load_lpips, lpips_distance
from dermflow.gan.quality import gate
from dermflow.labels import CLASSES
from dermflow.models import backbones
from dermflow.models.backbones import WeightsError
from dermflow.torchfile import save_model


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
                     "inception": {"available": False, "reason": "quality.inception: false"}},
          "lpips": {"available": True, "diversity": 0.2},
          "memorisation": {"near_copy_fraction": 0.0}}


def test_gate_passes_only_when_every_configured_check_ran_and_held():
    verdict = gate(REPORT, {"fid_baseline_max": 20, "lpips_diversity_min": 0.1,
                            "near_copy_fraction_max": 0.1, "recall_baseline_min": None},
                   "fail", "warn")
    assert verdict["status"] == "passed" and verdict["passed"]
    assert [(c["name"], c["ran"], c["status"]) for c in verdict["checks"]] == [
        ("fid_baseline_max", True, "passed"), ("lpips_diversity_min", True, "passed"),
        ("near_copy_fraction_max", True, "passed")]
    assert "3 of 3 configured checks ran, and all passed" in verdict["summary"]


def test_gate_with_a_skipped_check_is_incomplete_and_says_why():
    verdict = gate(REPORT, {"fid_baseline_max": 20, "fid_inception_max": 50}, "fail", "warn")
    assert verdict["status"] == "incomplete" and not verdict["passed"]
    skipped = verdict["checks"][1]
    assert skipped == {"name": "fid_inception_max", "metric": "spaces.inception.overall.fid",
                       "threshold": 50, "kind": "max", "value": None, "ran": False,
                       "status": "skipped",
                       "reason": "spaces.inception unavailable: quality.inception: false"}
    assert verdict["skipped"] == ["fid_inception_max"] and verdict["ran"] == 1
    # an LPIPS entry without weights and a set too small for the metrics are reasons too
    report = {**REPORT, "lpips": quality.lpips_unavailable("no AlexNet weights"),
              "spaces": {"baseline": {"overall": {"skipped": "needs at least 10 of each"}}}}
    reasons = [c["reason"] for c in gate(report, {"lpips_diversity_min": 0.1,
                                                  "precision_baseline_min": 0.5},
                                         "fail", "warn")["checks"]]
    assert reasons == ["lpips unavailable: no AlexNet weights",
                       "spaces.baseline.overall skipped: needs at least 10 of each"]


def test_gate_with_nothing_configured_is_incomplete_not_passed():
    verdict = gate(REPORT, dict.fromkeys(quality.CHECKS), "fail", "warn")
    assert verdict["status"] == "incomplete" and verdict["checks"] == []
    assert "nothing was checked" in verdict["summary"]


def test_failed_check_outranks_a_skipped_one():
    verdict = gate(REPORT, {"fid_baseline_max": 10, "precision_baseline_min": 0.5,
                            "fid_inception_max": 50, "near_copy_fraction_max": 0.0}, "warn",
                   "warn")
    assert verdict["status"] == "failed" and verdict["on_fail"] == "warn"
    assert verdict["failed"] == ["fid_baseline_max", "precision_baseline_min"]
    assert verdict["skipped"] == ["fid_inception_max"]


@pytest.mark.parametrize("status, on_fail, on_incomplete, stops", [
    ("failed", "fail", "warn", True), ("failed", "warn", "fail", False),
    ("incomplete", "fail", "warn", False), ("incomplete", "warn", "fail", True),
    ("passed", "fail", "fail", False)])
def test_on_fail_and_on_incomplete_decide_what_stops_the_run(status, on_fail, on_incomplete,
                                                              stops):
    thresholds = {"passed": {"fid_baseline_max": 20}, "failed": {"fid_baseline_max": 10},
                  "incomplete": {"fid_inception_max": 50}}[status]
    verdict = gate(REPORT, thresholds, on_fail, on_incomplete)
    assert verdict["status"] == status
    if stops:
        with pytest.raises(quality.QualityGateError, match=f"quality.on_{status[:4]}"):
            quality.enforce(verdict)
    else:
        quality.enforce(verdict)


def _copies(n: int, copied: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n real images and n synthetic ones, the first ``copied`` of them their source plus noise
    of one grey level, the rest unrelated images."""
    rng = np.random.default_rng(seed)
    real = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    synthetic = rng.integers(0, 256, real.shape, dtype=np.uint8)
    noise = rng.integers(-1, 2, real[:copied].shape)
    synthetic[:copied] = np.clip(real[:copied].astype(int) + noise, 0, 255)
    return real, synthetic


def _memorisation_inputs(real: np.ndarray, synthetic: np.ndarray) -> dict:
    """memorisation()'s arguments for synthetic image i made from real image i."""
    n = len(real)
    manifest = pd.DataFrame({"synthetic_id": [f"s{i}" for i in range(n)], "dx": "nv",
                             "source_image_id": [f"r{i}" for i in range(n)],
                             "source_row": np.arange(n), "row": np.arange(n)})
    index = pd.DataFrame({"image_id": [f"r{i}" for i in range(n)], "dx": "nv",
                          "row": np.arange(n)})
    return {"images": real, "synthetic": synthetic, "manifest": manifest,
            "pool_rows": np.arange(n), "index": index, "near_copy_mae": 0.01,
            "synthetic_f": torch.from_numpy(synthetic.reshape(n, -1).astype(np.float32)),
            "real_f": torch.from_numpy(real.reshape(n, -1).astype(np.float32))}


def test_near_copy_share_is_gated_against_its_threshold():
    real, synthetic = _copies(20, 12)
    summary, table = memorisation(**_memorisation_inputs(real, synthetic),
                                  near_copy_fraction_max=0.5)
    assert table["near_copy"].tolist() == [True] * 12 + [False] * 8
    assert summary["near_copy_fraction"] == pytest.approx(0.6) and summary["near_copies"] == 12
    assert summary["near_copy_fraction_max"] == 0.5
    report = {**REPORT, "memorisation": summary}
    assert gate(report, {"near_copy_fraction_max": 0.5}, "fail", "warn")["failed"] == [
        "near_copy_fraction_max"]
    assert gate(report, {"near_copy_fraction_max": 0.7}, "fail", "warn")["status"] == "passed"


def test_default_config_gates_near_copies():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    quality_schema = schema["properties"]["quality"]["properties"]
    default = quality_schema["thresholds"]["properties"]["near_copy_fraction_max"]["default"]
    assert default is not None and 0 < default < 0.5
    assert quality_schema["on_incomplete"]["default"] == "warn"


def test_mean_abs_difference_is_the_same_in_any_chunk_size():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (7, 9, 5, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (11, 9, 5, 3), dtype=np.uint8)
    rows_a, rows_b = np.array([6, 0, 0, 3, 5]), np.array([10, 2, 0, 0, 7])
    whole = np.abs(a[rows_a].astype(np.float64) - b[rows_b]).mean(axis=(1, 2, 3)) / 255
    for chunk in (1, 2, 5, 100, None):
        got = mean_abs_difference(a, rows_a, b, rows_b, chunk)
        np.testing.assert_allclose(got, whole, rtol=1e-12)
        assert np.array_equal(got, mean_abs_difference(a, rows_a, b, rows_b, 5))


def test_memorisation_holds_a_chunk_of_pixels_not_the_whole_set(monkeypatch):
    real, synthetic = _copies(200, 50)  # 200 x 768 pixels: 600 kB as float32 per array
    inputs = _memorisation_inputs(real, synthetic)
    unchunked = memorisation(**inputs, near_copy_fraction_max=0.1)
    monkeypatch.setattr(memorisation_module, "CHUNK_BYTES", 2 * 768 * 10)  # 10 images a chunk
    tracemalloc.start()
    chunked = memorisation(**inputs, near_copy_fraction_max=0.1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert chunked[0] == unchunked[0]
    pd.testing.assert_frame_equal(chunked[1], unchunked[1])
    assert peak < 300_000  # casting the set and its matches whole takes over 1.2 MB


class MeanAbsolute(torch.nn.Module):
    """An LPIPS stand-in with LPIPS's call shape: N x 1 x 1 x 1 distances of paired images."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)


def test_lpips_distance_gathers_rows_a_batch_at_a_time():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    rows_a, rows_b = np.array([5, 0, 0, 2, 1]), np.array([3, 3, 0, 1, 2])
    whole = lpips_distance(MeanAbsolute(), torch.from_numpy(a[rows_a]),
                           torch.from_numpy(b[rows_b]), batch_size=100)
    assert torch.equal(lpips_distance(MeanAbsolute(), a, b, 2, rows_a=rows_a, rows_b=rows_b),
                       whole)


def test_lpips_entry_without_weights_has_the_computed_entrys_shape():
    real, synthetic = _copies(12, 4)
    manifest = pd.DataFrame({"dx": ["nv"] * 6 + ["mel"] * 6, "row": np.arange(12),
                             "source_row": [-1] * 6 + list(range(6))})
    pool = pd.DataFrame({"dx": ["nv"] * 12, "row": np.arange(12)})
    computed, _ = quality.lpips_report(MeanAbsolute(), real, synthetic, manifest, pool,
                                       pairs=4, seed=0, batch_size=5)
    missing = quality.lpips_unavailable("no weights")

    def shape(entry):
        return {k: shape(v) if isinstance(v, dict) else None for k, v in entry.items()}

    assert shape(missing) == {**shape(computed), "reason": None}
    assert missing["to_source"] is None and missing["reason"] == "no weights"
    assert computed["per_class"]["nv"]["to_source"] is None  # sourceless (DCGAN-like) images
    assert computed["per_class"]["mel"]["to_source"] > 0


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


@pytest.fixture
def small_check(tmp_path, monkeypatch) -> dict:
    """check_synthetic's files for 12 real and 10 synthetic images (6 near copies of their
    source), with pixels as features and no LPIPS weights."""
    real, synthetic = _copies(12, 6)
    synthetic = synthetic[:10]
    np.save(tmp_path / "cache.npy", real)
    ids = [f"r{i}" for i in range(12)]
    pd.DataFrame({"image_id": ids, "dx": "nv", "row": np.arange(12)}).to_csv(
        tmp_path / "index.csv", index=False)
    pd.DataFrame({"image_id": ids, "split": "train"}).to_csv(tmp_path / "split.csv", index=False)
    np.save(tmp_path / "synthetic.npy", synthetic)
    pd.DataFrame({"synthetic_id": [f"s{i}" for i in range(10)], "dx": "nv",
                  "source_image_id": ids[:10], "source_row": np.arange(10),
                  "row": np.arange(10)}).to_csv(tmp_path / "manifest.csv", index=False)

    def no_weights(weights_dir, device):
        raise WeightsError(f"LPIPS needs AlexNet's ImageNet weights: none in {weights_dir}")

    monkeypatch.setattr(quality, "load_lpips", no_weights)
    monkeypatch.setattr(quality, "extractor", lambda space, **kwargs: None)
    monkeypatch.setattr(quality, "features", lambda ext, images, rows, **kwargs: torch.from_numpy(
        np.asarray(images if rows is None else images[rows]).reshape(
            -1 if rows is None else len(rows), 768).astype(np.float64)))
    settings = {"inception": False, "batch_size": 4, "min_class_images": 5, "lpips_pairs": 3,
                "near_copy_mae": 0.01, "on_fail": "fail", "on_incomplete": "warn",
                "thresholds": {"fid_inception_max": 50, "lpips_diversity_min": 0.1,
                               "near_copy_fraction_max": 0.7}}
    return {"files": [str(tmp_path / name) for name in (
        "baseline.pt", "cache.npy", "index.csv", "split.csv", "synthetic.npy", "manifest.csv")],
            "settings": settings, "out": tmp_path}


def run_check(small_check: dict, **settings) -> dict:
    out = small_check["out"]
    return quality.check_synthetic(
        *small_check["files"], protocol="grouped", settings={**small_check["settings"], **settings},
        weights_dir=str(out / "no-weights"), device=torch.device("cpu"), seed=0,
        out_json=str(out / "quality.json"), out_markdown=str(out / "quality.md"),
        out_nearest=str(out / "nearest.csv"))


def test_check_without_lpips_weights_is_incomplete_and_says_what_it_checked(small_check):
    run_check(small_check)
    report = json.loads((small_check["out"] / "quality.json").read_text())
    lp = report["lpips"]
    assert lp["available"] is False and lp["to_source"] is None and "AlexNet" in lp["reason"]
    assert set(lp["per_class"]) == set(CLASSES)
    g = report["gate"]
    assert g["status"] == "incomplete" and g["passed"] is False
    assert {c["name"]: (c["ran"], c["status"]) for c in g["checks"]} == {
        "fid_inception_max": (False, "skipped"), "lpips_diversity_min": (False, "skipped"),
        "near_copy_fraction_max": (True, "passed")}
    assert report["memorisation"]["near_copy_fraction"] == pytest.approx(0.6)
    assert report["memorisation"]["near_copy_fraction_max"] == 0.7
    assert report["spaces"]["baseline"]["reference"]["real"] == 6
    assert set(report["scales"]) >= {"fid", "kid", "lpips", "near_copy"}
    text = (small_check["out"] / "quality.md").read_text()
    assert "Quality gate: INCOMPLETE: 1 of 3 configured checks ran" in text
    assert "| baseline | " in text and "| baseline: real vs real (reference) | " in text
    assert "Near copies: 60.0% of synthetic images (6 of 10)" in text
    assert "at most 70.0%" in text
    assert re.search(r"is the image's own source for \d+\.\d% of", text)  # a share, in %
    assert "LPIPS was not computed: LPIPS needs AlexNet's ImageNet weights" in text


def test_near_copies_over_the_threshold_fail_the_gate(small_check, caplog):
    with pytest.raises(quality.QualityGateError, match="near_copy_fraction_max=0.6 "):
        run_check(small_check, thresholds={"near_copy_fraction_max": 0.5})
    assert not (small_check["out"] / "quality.json").exists()
    # the failed job's outputs are deleted: what it measured stays in its log
    assert "Near copies: 60.0% of synthetic images (6 of 10)" in caplog.text


def test_on_incomplete_fail_stops_a_run_with_a_skipped_check(small_check):
    with pytest.raises(quality.QualityGateError, match="lpips_diversity_min .*on_incomplete"):
        run_check(small_check, on_incomplete="fail")
