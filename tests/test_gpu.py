"""The GPU paths, proven on a GPU (``pytest -m gpu``): each test runs once on CUDA, skipped
where there is none, and once more on the CPU as its stand-in, so the same code path is
exercised in CI before any GPU runs it.

benchmarks/gpu_proof.py runs the CUDA half (``-m gpu -k cuda``) on a GPU machine. The
CUDA variants use the real sizes (224 px, config.yaml's networks, the benchmarks' batch of
128 where a model is compiled, so the benchmarks' compiles can reuse the compile cache);
the CPU stand-ins use tiny ones.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from conftest import REPO
from stage_configs import train_config
from torch import nn

import dermflow.gan.cgan as cgan
import dermflow.training.loop as loop
from dermflow.config import validate_config
from dermflow.experiments.saliency import SaliencyMaps
from dermflow.gan.training import gan_config
from dermflow.labels import CLASSES
from dermflow.training.augmentation import AUGMENTATIONS
from dermflow.training.batches import GPU_SHARE, ImageTensor, fits_on_gpu
from dermflow.training.distributed import rank_world, run_distributed
from dermflow.training.loop import fit, predict

pytestmark = pytest.mark.gpu

NO_CUDA = "no CUDA device here: the CPU stand-in of this test runs instead"
DEVICES = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                         reason=NO_CUDA), id="cuda"),
           pytest.param("cpu", id="cpu")]
HAM10000 = 10_015  # images in HAM10000


def config() -> dict:
    """config.yaml, validated (defaults filled in)."""
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# --- C'GAN: one WGAN-GP step in bf16 --------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_cgan_wgan_gp_step_in_bf16_matches_fp32(device: str, monkeypatch: pytest.MonkeyPatch):
    """The gradient penalty's double backward under bf16 autocast: finite losses, and the
    penalty within a few percent of an fp32 step from the same weights on the same batch."""
    dev = torch.device(device)
    if device == "cpu":  # dermflow autocasts on CUDA only; the stand-in switches it on here
        monkeypatch.setattr(cgan, "autocast", lambda d, precision: torch.autocast(
            d.type, dtype=torch.bfloat16, enabled=precision == "bf16"))
        size, batch = 16, 4
        settings = {**config()["gan"], "latent_dim": 8, "embed_dim": 4, "channels": 8,
                    "depth": 2, "res_blocks": 1, "critic_channels": 8, "critic_depth": 2}
    else:  # config.yaml's networks (~23M generator) at 224 px
        size, batch, settings = 224, 8, config()["gan"]
    torch.manual_seed(0)
    generator, critic = (m.to(dev) for m in cgan.networks(settings, size))
    x = torch.rand(batch, 3, size, size, device=dev) * 2 - 1
    attention = torch.rand(batch, 1, size, size, device=dev)
    label = torch.arange(batch, device=dev) % len(CLASSES)

    def step(precision: str) -> tuple[dict[str, float], torch.dtype, nn.Module]:
        g, d = copy.deepcopy(generator), copy.deepcopy(critic)
        dtypes: list[torch.dtype] = []
        d.features[0].register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        run = cgan.CganStep(g, d, gan_config(settings, precision=precision, seed=0, extra={}))
        losses = run(x, attention, label, torch.Generator(dev).manual_seed(0))
        return {k: float(v) for k, v in losses.items()}, dtypes[0], g

    fp32, fp32_dtype, _ = step("fp32")
    bf16, bf16_dtype, trained = step("bf16")
    assert (fp32_dtype, bf16_dtype) == (torch.float32, torch.bfloat16)
    assert all(np.isfinite(v) for v in [*fp32.values(), *bf16.values()]), (fp32, bf16)
    gp32, gp16 = fp32["gradient_penalty"], bf16["gradient_penalty"]
    assert abs(gp16 - gp32) <= 0.05 * abs(gp32) + 1e-3, (gp32, gp16)
    assert abs(bf16["loss_d"] - fp32["loss_d"]) <= 0.1 * abs(fp32["loss_d"]) + 0.05
    assert all(torch.isfinite(p).all() for p in trained.parameters())


# --- torch.compile of the baseline and of the fusion model ---------------------------------


def _baseline(size: int) -> nn.Module:
    from dermflow.models import backbones

    return backbones.create("resnetv2_50", num_classes=len(CLASSES))


def _fusion(size: int, cpu: bool) -> nn.Module:
    from dermflow.models import factory

    settings = {**config()["classifier"], "pretrained": False}
    if cpu:
        settings.update(fusion_dim=32, fusion_heads=4, bottleneck=16)
    model = factory.create("resnet50v2_deit", num_classes=len(CLASSES), image_size=size,
                           settings=settings, weights_dir=None)
    model.freeze_backbones()  # the fine-tuning stage, as bench_classifier.py trains it
    model.unfreeze(settings["unfreeze_blocks"])
    return model


@pytest.mark.parametrize("model_name", ["baseline", "fusion"])
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_model_trains_a_step(device: str, model_name: str,
                                      monkeypatch: pytest.MonkeyPatch):
    """fit() with compile on: the model is traced into a graph and a step changes it."""
    dev = torch.device(device)
    if device == "cpu":  # Inductor's C++ build takes minutes on a CPU: trace and
        # differentiate the same graph with aot_eager instead (TorchDynamo + AOTAutograd)
        monkeypatch.setattr(loop.torch, "compile",
                            functools.partial(torch.compile, backend="aot_eager"))
        size, batch = 32, 4
    else:
        size, batch = 224, 128  # bench_baseline/bench_classifier's shapes: a warm cache
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _baseline(size) if model_name == "baseline" else _fusion(size, device == "cpu")
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    data = ImageTensor(images(batch + 4, size), np.arange(batch + 4) % len(CLASSES), dev,
                       (0.5,) * 3, (0.5,) * 3)
    cfg = train_config(epochs=1, batch_size=batch, lr=1e-3, compile=True)
    result = fit(model, data, np.arange(batch), np.arange(batch, batch + 4), cfg)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert np.isfinite(result.history["train_loss"]).all()
    after = dict(model.named_parameters())
    assert any(not torch.equal(before[k].to(dev), after[k].detach()) for k in before)


# --- the uint8 cache resident on the GPU, augmented there ----------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_cache_is_resident_and_augmented_on_the_device(device: str):
    dev = torch.device(device)
    data = ImageTensor(images(32, 64), np.arange(32) % len(CLASSES), dev, (0.5,) * 3,
                       (0.5,) * 3)
    assert data.resident and data.images.device.type == device
    assert data.images.dtype == torch.uint8
    rows = torch.arange(16)
    plain, labels = data.batch(rows)
    assert labels.device.type == device and labels.tolist() == (np.arange(16) % 7).tolist()
    for policy in AUGMENTATIONS:
        x, _ = data.batch(rows, torch.Generator(dev).manual_seed(1), policy)
        again, _ = data.batch(rows, torch.Generator(dev).manual_seed(1), policy)
        assert x.device.type == device and x.is_contiguous(memory_format=torch.channels_last)
        assert x.shape == plain.shape and torch.isfinite(x).all()
        assert torch.equal(x, again), policy  # seeded by the epoch's device generator
        assert not torch.allclose(x, plain), policy


# --- the full 10,015-image 224 px cache fits and is resident -------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_the_full_224px_cache_is_resident(device: str):
    """HAM10000 at 224 px (1.5 GB of uint8) goes to the GPU whole; the CPU stand-in checks
    the rule that decides it against an 80 GB and a 2 GB card."""
    nbytes = HAM10000 * 224 * 224 * 3
    if device == "cpu":
        assert fits_on_gpu(nbytes, 80 * 2**30)  # an H100's 80 GB
        assert not fits_on_gpu(nbytes, 2 * 2**30)  # at most GPU_SHARE of the free memory
        assert fits_on_gpu(nbytes, int(nbytes / GPU_SHARE) + 1)
        return
    dev = torch.device("cuda")
    cache = np.zeros((HAM10000, 224, 224, 3), np.uint8)
    cache[::1000] = 255
    labels = np.arange(HAM10000) % len(CLASSES)
    assert fits_on_gpu(cache.nbytes, torch.cuda.mem_get_info(dev)[0])
    data = ImageTensor(cache, labels, dev, (0.5,) * 3, (0.5,) * 3)
    try:
        assert data.resident and data.images.is_cuda
        assert tuple(data.images.shape) == (HAM10000, 224, 224, 3)
        x, y = data.batch(torch.tensor([0, 1, 10_000]), torch.Generator(dev).manual_seed(0))
        assert x.shape == (3, 3, 224, 224) and y.tolist() == labels[[0, 1, 10_000]].tolist()
        assert int(data.images[10_000].float().mean()) == 255
    finally:
        del data
        torch.cuda.empty_cache()


# --- the device claim with real CUDA in two processes --------------------------------------

CLAIM_JOB = f"sys_path = {str(REPO / 'src')!r}\n" + """\
import json, os, sys, time
sys.path.insert(0, sys_path)
from dermflow.training.device import claim_gpus
lock_dir, out, fake = sys.argv[1], sys.argv[2], sys.argv[3] == "fake"
with claim_gpus(1, lock_dir=lock_dir, device_count=1 if fake else None, owner=out) as claim:
    start = time.time()
    record = {"physical": list(claim.physical), "device": str(claim.device),
              "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if not fake:
        import torch
        record["count"] = torch.cuda.device_count()  # CUDA sees only the claimed GPU
        record["sum"] = float(torch.ones(1000, device=claim.device).sum())
        record["name"] = torch.cuda.get_device_name(claim.device)
    time.sleep(1.5)
    record.update(start=start, end=time.time())
open(out, "w").write(json.dumps(record))
"""


@pytest.mark.parametrize("device", DEVICES)
def test_two_processes_claim_distinct_gpus_or_wait(device: str, tmp_path: Path):
    """Two jobs at once: different GPUs where there are two, else the second waits for the
    first. The CPU stand-in fakes one GPU (no CUDA is touched)."""
    (tmp_path / "job.py").write_text(CLAIM_JOB)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID",
                        "DERMFLOW_TRUST_CUDA_VISIBLE_DEVICES")}
    mode = "fake" if device == "cpu" else "cuda"
    jobs = [subprocess.Popen([sys.executable, str(tmp_path / "job.py"), str(tmp_path / "locks"),
                              str(tmp_path / f"{i}.json"), mode], env=env) for i in range(2)]
    assert [job.wait(timeout=300) for job in jobs] == [0, 0]
    a, b = (json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2))
    gpus = 1 if device == "cpu" else torch.cuda.device_count()
    for record in (a, b):
        assert record["device"] == "cuda:0" and record["visible"] == str(record["physical"][0])
        if device == "cuda":
            assert record["count"] == 1 and record["sum"] == 1000.0
    overlap = min(a["end"], b["end"]) > max(a["start"], b["start"])
    if gpus >= 2:
        assert a["physical"] != b["physical"] and overlap
    else:
        assert a["physical"] == b["physical"] == [0] and not overlap


# --- a one-process NCCL DDP step -----------------------------------------------------------


class SmallNet(nn.Module):
    """A small CNN with BatchNorm (which DDP turns into SyncBatchNorm on CUDA)."""

    num_classes = len(CLASSES)

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                 nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _ddp_train(device: str, out: Path | None = None) -> dict[str, torch.Tensor]:
    dev = torch.device(device, 0) if device == "cuda" else torch.device("cpu")
    data = ImageTensor(images(24, 16), np.arange(24) % len(CLASSES), dev, (0.5,) * 3,
                       (0.5,) * 3)
    torch.manual_seed(0)
    model = SmallNet()
    result = fit(model, data, np.arange(16), np.arange(16, 24),
                 train_config(epochs=2, batch_size=8, lr=1e-2, seed=3))
    if out is not None:
        torch.save({"state": result.state, "rank_world": rank_world(),
                    "sync_bn": any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())},
                   out)
    return result.state


def _ddp_rank(rank: int, device: str, out: Path) -> None:
    torch.set_num_threads(1)
    _ddp_train(device, out)


@pytest.mark.parametrize("device", DEVICES)
def test_one_process_ddp_step_matches_plain_training(device: str, tmp_path: Path):
    """fit() inside a one-process group (NCCL on CUDA, gloo on the CPU) trains through
    DistributedDataParallel (SyncBatchNorm on CUDA) to the weights of plain training."""
    run_distributed(_ddp_rank, 1, device, tmp_path / "ddp.pt", device=torch.device(device))
    saved = torch.load(tmp_path / "ddp.pt")
    assert saved["rank_world"] == (0, 1)
    assert saved["sync_bn"] == (device == "cuda")
    plain = _ddp_train(device)
    tolerance = 1e-3 if device == "cuda" else 1e-5  # SyncBatchNorm has its own CUDA kernels
    for name, value in plain.items():
        assert torch.allclose(value.float(), saved["state"][name].float(), atol=tolerance), name


# --- predict with Grad-CAM -----------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_predict_with_grad_cam(device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """predict's whole stage on the device: probabilities for val and test, Grad-CAM at the
    fusion model's saliency layer, the figure."""
    from dermflow.experiments import predict as predict_module
    from dermflow.models import backbones, factory
    from dermflow.torchfile import save_model

    dev = torch.device(device)
    size = 224 if device == "cuda" else 32
    settings = {**config()["classifier"], "pretrained": False, "saliency_per_class": 1}
    if device == "cpu":
        settings.update(fusion_dim=32, fusion_heads=4, bottleneck=16)
    torch.manual_seed(0)
    model = factory.create("resnet50v2_deit", num_classes=len(CLASSES), image_size=size,
                           settings=settings, weights_dir=None)
    mean, std = backbones.normalization(model)
    save_model(model, tmp_path / "model.pt", kind="classifier", architecture="resnet50v2_deit",
               task="multiclass", classes=list(CLASSES), image_size=size, mean=mean, std=std,
               settings=settings)
    n = 2 * len(CLASSES)
    np.save(tmp_path / "cache.npy", images(n, size))
    dx = [CLASSES[i % len(CLASSES)] for i in range(n)]
    pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(n)], "source": "real",
                  "array": "cache", "row": range(n), "lesion_id": [f"L{i}" for i in range(n)],
                  "dx": dx, "label": [CLASSES.index(d) for d in dx],
                  "split": ["val"] * len(CLASSES) + ["test"] * len(CLASSES)},
                 ).to_csv(tmp_path / "dataset.csv", index=False)
    maps: list[SaliencyMaps] = []
    grad_cam = predict_module.grad_cam
    monkeypatch.setattr(predict_module, "grad_cam",
                        lambda *args, **kwargs: maps.append(grad_cam(*args, **kwargs)) or maps[-1])
    out = predict_module.predict_experiment(
        str(tmp_path / "model.pt"), str(tmp_path / "dataset.csv"), str(tmp_path / "cache.npy"),
        None, device=dev, precision="bf16", per_class=1, batch_size=8,
        out_predictions=str(tmp_path / "predictions.csv"),
        out_saliency=str(tmp_path / "saliency.png"))
    probs = out[[f"prob_{d}" for d in CLASSES]].to_numpy()
    assert len(out) == n and np.allclose(probs.sum(1), 1, atol=1e-3)
    heat = maps[0].maps
    assert heat.shape == (len(CLASSES), size, size)
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    # the ResNet branch's last stage at 224 px (7 x 7), an earlier one at 32 px (4 x 4)
    assert maps[0].side == ((7, 7) if size == 224 else (4, 4))
    assert (tmp_path / "saliency.png").stat().st_size > 0


# --- predicted probabilities come from float32 logits, even under bf16 autocast -----------


def linear_head(device: str) -> tuple[nn.Module, nn.Module, int]:
    """A dermflow-style network: a conv body, then a Linear head."""
    body = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Linear(16, len(CLASSES))
    return nn.Sequential(body, head), head, 16


def conv_head(device: str) -> tuple[nn.Module, nn.Module, int]:
    """timm's resnetv2, the baseline's family, whose classifier is a 1x1 Conv2d (``head.fc``,
    no Linear anywhere): the baseline's resnetv2_50 on CUDA, resnetv2_18 on the CPU."""
    name = "resnetv2_50" if device == "cuda" else "resnetv2_18"
    model = timm.create_model(name, pretrained=False, num_classes=len(CLASSES))
    return model, model.get_classifier(), 224 if device == "cuda" else 32


@pytest.mark.parametrize("network", [linear_head, conv_head], ids=["linear-head", "conv-head"])
@pytest.mark.parametrize("device", DEVICES)
def test_probabilities_are_the_softmax_of_float32_logits(device: str, network,
                                                         monkeypatch: pytest.MonkeyPatch):
    """bf16 logits would be rounded to 8 significant bits (up to a few percent on a
    probability, and ties); the written probabilities are softmax(float32 logits) of the
    features the bf16 body computed, whichever layer computes the logits."""
    dev = torch.device(device)
    if device == "cpu":  # dermflow autocasts on CUDA only; the stand-in switches it on here
        monkeypatch.setattr(loop, "autocast", lambda d, precision: torch.autocast(
            d.type, dtype=torch.bfloat16, enabled=precision == "bf16"))
    torch.manual_seed(0)
    model, head, size = network(device)
    with torch.no_grad():
        head.weight.mul_(40)  # confident logits, as a trained classifier's
    model = model.to(dev).eval()
    n = 32 if device == "cuda" else 8
    data = ImageTensor(images(n, size), np.arange(n) % len(CLASSES), dev, (0.5,) * 3,
                       (0.5,) * 3)
    probs = predict(model, data, np.arange(n), n, "bf16")  # one batch: the same kernels below
    x, _ = data.batch(torch.arange(n))
    features = []
    hook = head.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    with torch.no_grad():
        with loop.autocast(dev, "bf16"):
            rounded = torch.softmax(model(x).float(), 1).cpu().numpy()
        hook.remove()
        expected = torch.softmax(head(features[0].float()).flatten(1), 1).cpu().numpy()
    assert features[0].dtype == torch.bfloat16  # the body ran in bf16
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
    assert np.abs(rounded - expected).max() > 1e-3  # what bf16 logits would have written


# --- a training step never makes the host wait for the GPU ---------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "pinned-on-the-host"])
def test_a_training_step_has_no_host_sync_cuda(resident: bool,
                                               monkeypatch: pytest.MonkeyPatch):
    """Batch, augmentation, forward, backward and Adam step under CUDA's sync debug mode,
    which raises on any call that waits for the GPU (a copy from pageable memory, .item(),
    a tensor made from host data). The CPU stand-ins are in tests/test_batches.py."""
    dev = torch.device("cuda", 0)
    if not resident:
        monkeypatch.setattr("dermflow.training.batches.fits_on_gpu", lambda *a: False)
    data = ImageTensor(images(64, 32), np.arange(64) % len(CLASSES), dev, (0.5,) * 3,
                       (0.5,) * 3)
    assert data.resident == resident
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, len(CLASSES))).to(dev)
    optimizer = torch.optim.Adam(model.parameters())
    generator = torch.Generator(dev).manual_seed(0)
    order = torch.randperm(64)
    for warm_up in (True, False):  # the first step allocates (pinned blocks, Adam's state)
        torch.cuda.set_sync_debug_mode(0 if warm_up else "error")
        try:
            for policy in AUGMENTATIONS:
                for chunk in order.split(16):
                    x, y = data.batch(chunk, generator, policy)
                    with loop.autocast(dev, "bf16"):
                        loss = loop.cross_entropy(model(x), y, None, 0.1)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
