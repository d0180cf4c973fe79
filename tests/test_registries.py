"""Each extension table drives its own tests: a model, generator kind or augmentation policy
added to its table is built, stepped and documented here without anyone writing a test."""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

from dermflow.config import validate_config
from dermflow.errors import ConfigError
from dermflow.gan.registry import BALANCES, GENERATORS, family
from dermflow.gan.step import TO_UNIT, AdversarialStep
from dermflow.gan.training import fit_gan, gan_config
from dermflow.models.registry import MODELS
from dermflow.training.augmentation import AUGMENTATIONS
from dermflow.training.batches import ImageTensor

README = (REPO / "README.md").read_text()


@pytest.fixture(scope="module")
def config() -> dict:
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_classifier_has_a_builder_and_a_readme_entry(name):
    module, function = MODELS[name].builder.split(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert f"`{name}`" in README, f"README's model table does not name {name}"


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_every_generator_kind_trains_an_epoch_and_logs_its_panels(kind, config):
    settings = copy.deepcopy(config["gan"])
    settings.update(kind=kind, channels=8, depth=2, res_blocks=1, critic_channels=8,
                    critic_depth=2, latent_dim=8, embed_dim=4, batch_size=8,
                    dcgan={**settings["dcgan"], "latent_dim": 8, "channels": 4, "size": 16,
                           "batch_size": 8})
    module = family(kind)
    generator, critic = module.networks(settings, 16)
    cfg = gan_config({**settings, "epochs": 1}, precision="fp32", seed=0, extra={})
    step = module.Step(generator, critic, cfg)
    assert isinstance(step, AdversarialStep)
    rng = np.random.default_rng(0)
    data = ImageTensor(rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
                       np.arange(16) % 7, torch.device("cpu"), *TO_UNIT)
    attention = (torch.from_numpy(rng.random((16, 16, 16), dtype=np.float32)).half()
                 if GENERATORS[kind].needs_attention else None)
    history = fit_gan(step, data, attention, np.arange(16), cfg)
    panels = {column for columns in module.PANELS.values() for column in columns}
    assert panels <= set(step.losses) <= set(history.columns)
    assert np.isfinite(history[list(step.losses)].to_numpy()).all()
    assert f"`gan.kind: {kind}`" in README, f"README's generator table does not name {kind}"


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_every_generator_kind_is_a_balance_mode_that_needs_its_own_kind(kind, config):
    assert kind in BALANCES
    other = next((k for k in GENERATORS if k != kind), None)
    if other is None:
        pytest.skip("one generator kind only")
    broken = {**config, "gan": {**config["gan"], "kind": other},
              "experiments": [{"name": "x", "balance": kind, "model": "resnet50v2_deit"}]}
    with pytest.raises(ConfigError, match=f"balance: {kind} needs gan.kind: {kind}"):
        validate_config(broken)


@pytest.mark.parametrize("policy", sorted(AUGMENTATIONS))
def test_every_augmentation_keeps_shape_and_range_and_replays_from_its_seed(policy):
    x = torch.rand(4, 3, 16, 16)
    first = AUGMENTATIONS[policy](x, torch.Generator().manual_seed(3))
    again = AUGMENTATIONS[policy](x, torch.Generator().manual_seed(3))
    other = AUGMENTATIONS[policy](x, torch.Generator().manual_seed(4))
    assert first.shape == x.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize(("key", "value", "names"), [
    ("model", "vgg16", MODELS), ("balance", "stylegan", BALANCES)])
def test_an_unregistered_name_is_a_config_error_listing_the_registered_ones(config, key, value,
                                                                             names):
    entry = {"name": "x", "balance": "none", "model": "resnet50v2_deit", key: value}
    with pytest.raises(ConfigError, match=rf"experiments\.0\.{key}: '{value}' is not one of") \
            as err:
        validate_config({**config, "experiments": [entry]})
    assert all(name in str(err.value) for name in names)
    with pytest.raises(ConfigError, match="gan.kind: 'stylegan' is not one of"):
        validate_config({**config, "gan": {**config["gan"], "kind": "stylegan"}})
