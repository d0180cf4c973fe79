"""Files stages read back (model files, checkpoints, generator files, image arrays): they load
as tensors and plain data only, so a crafted file runs nothing, and a damaged one is one
line naming the file and the command that rebuilds it."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from stage_configs import gan_config, train_config

from dermflow.config import validate_config
from dermflow.data.cache import load_cache, load_dataset
from dermflow.data.preparation import recipe
from dermflow.errors import DamagedFileError
from dermflow.gan.networks import load_networks
from dermflow.gan.training import fit_gan
from dermflow.labels import CLASSES
from dermflow.models import backbones, factory
from dermflow.models.io import load_model
from dermflow.stage import run_stage
from dermflow.torchfile import save_model
from dermflow.training.batches import ImageTensor
from dermflow.training.loop import fit

CPU = torch.device("cpu")
SIZE = 32


def write_classifier(path: Path) -> dict:
    """A registered classifier (resnet18, untrained, 32 px) saved with the metadata
    train_classifier writes, from the shipped config; returns its state dict."""
    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    settings = {**config["classifier"], "pretrained": False}
    torch.manual_seed(0)
    model = factory.create("resnet18", num_classes=len(CLASSES), image_size=SIZE,
                           settings=settings, weights_dir=None)
    mean, std = backbones.normalization(model)
    save_model(model, path, kind="classifier", architecture="resnet18", task="multiclass",
               classes=list(CLASSES), image_size=SIZE, mean=mean, std=std, settings=settings,
               experiment=config["experiments"][0], name="tiny", best_epoch=1,
               protocol="grouped", preparation={**recipe(config), "image_size": SIZE})
    return model.state_dict()


class RunsCode:
    """Unpickling this calls os.system: what a malicious model file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """(file, marker): a torch file whose pickle would create ``marker`` when loaded."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.pt"
    torch.save({"state_dict": {}, "fingerprint": "x", "metadata": RunsCode(marker)}, path)
    return path, marker


def refuses(load, path: Path, marker: Path) -> None:
    """``load`` raises DamagedFileError naming ``path``, and the file's code never ran."""
    with pytest.raises(DamagedFileError, match="refused: loading it would call") as err:
        load()
    assert str(path) in str(err.value)
    assert not marker.exists(), "the file's code ran"


def test_model_file_holds_only_tensors_and_plain_data(tmp_path):
    state = write_classifier(tmp_path / "model.pt")
    torch.load(tmp_path / "model.pt", weights_only=True)  # no class, no numpy object in it
    model, meta = load_model(tmp_path / "model.pt", CPU)
    assert meta["architecture"] == "resnet18" and meta["preparation"]["image_size"] == SIZE
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_crafted_model_file_runs_nothing(crafted):
    path, marker = crafted
    refuses(lambda: load_model(path, CPU), path, marker)


def fit_tiny(checkpoint: Path) -> None:
    """One epoch of a 4-image run that resumes from ``checkpoint``."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 7))
    data = ImageTensor(np.zeros((4, 4, 4, 3), np.uint8), np.arange(4), CPU, (0.5,) * 3,
                       (0.5,) * 3)
    fit(net, data, np.arange(2), np.arange(2, 4), train_config(epochs=1), checkpoint=checkpoint)


def test_crafted_classifier_checkpoint_runs_nothing(crafted):
    path, marker = crafted
    refuses(lambda: fit_tiny(path), path, marker)


def test_truncated_checkpoint_says_to_delete_it(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"fingerprint": "x", "epoch": 1}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DamagedFileError, match=r"last.pt: truncated.*; delete it and rerun"):
        fit_tiny(path)


def test_crafted_gan_checkpoint_and_generator_file_run_nothing(crafted):
    path, marker = crafted
    step = SimpleNamespace(g=torch.nn.Linear(2, 2), d=torch.nn.Linear(2, 2))
    data = SimpleNamespace(device=CPU, labels=torch.zeros(2, dtype=torch.long))
    refuses(lambda: fit_gan(step, data, None, np.arange(2),
                            gan_config(epochs=1), path), path, marker)
    refuses(lambda: load_networks(path, CPU), path, marker)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "weights only"])
def test_damaged_model_file_names_itself_and_its_rule(tmp_path, damage):
    path = tmp_path / "model.pt"
    if damage == "weights only":  # a state dict alone: no metadata to rebuild the network
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    else:
        torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict()}, path)
        data = path.read_bytes()
        path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                          "text": b"architecture: resnet18\n"}[damage])
    with pytest.raises(DamagedFileError) as err:
        load_model(path, CPU)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "`snakemake --forcerun train_classifier`" in message


def test_damaged_generator_file_names_train_gan(tmp_path):
    path = tmp_path / "generator.pt"
    path.write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(DamagedFileError, match=r"--forcerun train_gan") as err:
        load_networks(path, CPU)
    assert str(path) in str(err.value)


@pytest.fixture
def cache(tmp_path: Path) -> tuple[Path, Path]:
    """A 6-image cache and its index, as cache_images writes them."""
    npy, index = tmp_path / "images_32.npy", tmp_path / "index_32.csv"
    np.save(npy, np.zeros((6, SIZE, SIZE, 3), np.uint8))
    pd.DataFrame({"row": range(6), "image_id": [f"ISIC_{i:07d}" for i in range(6)]}
                 ).to_csv(index, index=False)
    return npy, index


@pytest.mark.parametrize("keep", [0, 60, 2000], ids=["empty", "header cut", "pixels cut"])
def test_truncated_cache_names_itself_and_cache_images(cache, keep):
    npy, index = cache
    npy.write_bytes(npy.read_bytes()[:keep])
    with pytest.raises(DamagedFileError) as err:
        load_cache(npy, index)
    assert str(err.value).startswith(f"{npy}: truncated")
    assert str(err.value).endswith("rebuild it with `snakemake --forcerun cache_images`")


def test_synthetic_array_names_the_rule_that_writes_it(cache, tmp_path):
    npy, _ = cache
    table = pd.DataFrame({"array": ["cache", "synthetic"], "row": [0, 0]})
    table.to_csv(tmp_path / "dataset.csv", index=False)
    (tmp_path / "synthetic.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(DamagedFileError, match=r"synthetic.npy: .*--forcerun generate_synthetic"):
        load_dataset(tmp_path / "dataset.csv", npy, tmp_path / "synthetic.npy")


def test_cache_out_of_step_with_its_index_is_damaged(cache):
    npy, index = cache
    pd.read_csv(index).head(4).to_csv(index, index=False)
    with pytest.raises(DamagedFileError, match="6 images, but its index .* lists 4"):
        load_cache(npy, index)


def test_a_rule_reading_a_truncated_cache_logs_one_line_not_a_bug(cache, tmp_path):
    npy, index = cache
    npy.write_bytes(npy.read_bytes()[:2000])
    smk = SimpleNamespace(rule="train_baseline", log=[str(tmp_path / "train_baseline.log")],
                          output=[str(tmp_path / "baseline" / "model.pt")], config={},
                          params={}, resources={})
    with pytest.raises(SystemExit), run_stage(smk):
        load_cache(npy, index)
    logged = Path(smk.log[0]).read_text()
    assert "a bug in dermflow" not in logged and "Traceback" not in logged
    assert f"{npy}: truncated" in logged and "--forcerun cache_images" in logged
