"""The other papers' classifiers: each one's distinctive part, and the recipes they train with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage_configs import train_config

from dermflow.config import load_schema
from dermflow.errors import ConfigError
from dermflow.experiments.saliency import MIN_SIDE, choose_layer
from dermflow.labels import BINARY, CLASSES, task_classes, task_labels
from dermflow.models import factory, registry
from dermflow.models.asff import ASFFResNet50
from dermflow.models.dermagan_cnn import DermaGanCNN
from dermflow.models.freezing import parameter_layers
from dermflow.models.hybrids import HybridClassifier
from dermflow.training.batches import ImageTensor
from dermflow.training.loop import fit

SETTINGS = {"pretrained": False, "fusion_dim": 32, "fusion_heads": 4, "bottleneck": 16,
            "dropout": 0.3}


@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_every_model_builds_for_both_tasks(name):
    for classes in (CLASSES, BINARY):
        model = factory.create(name, num_classes=len(classes), image_size=32,
                                     settings=SETTINGS, weights_dir=None)
        assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, len(classes))
        assert set(model.saliency_layers()) <= set(model.modules())
        # the demo's 32 px still leaves each model a Grad-CAM layer that localises
        assert min(choose_layer(model, torch.rand(1, 3, 32, 32)).side) >= MIN_SIDE


def test_schema_recipes_and_builders_name_the_same_models():
    schema = load_schema()["properties"]["experiments"]["items"]["properties"]["model"]["enum"]
    assert set(schema) == set(registry.MODELS)


def test_recipes_sit_between_the_config_section_and_the_overrides():
    section = {"lr": 1e-4, "epochs": 8, "schedule": "staged", "augmentation": "dermoscopy"}
    densenet = {"name": "x", "model": "cnn_densenet121", "overrides": {"lr": 1e-3}}
    merged = registry.experiment_settings(section, densenet)
    assert merged["schedule"] == "single" and merged["augmentation"] == "keras"  # paper 001
    assert merged["frozen_layers"] == 55 and merged["class_weights"] is True
    assert merged["lr"] == 1e-3  # the experiment's override wins
    assert merged["epochs"] == 8  # the run's budget is never a recipe's
    assert list(merged) == sorted(merged)
    fusion = registry.experiment_settings(section, {"name": "y", "model": "resnet50v2_deit"})
    assert fusion == dict(sorted(section.items()))
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        registry.experiment_settings(section, {"name": "z", "model": "vgg"})


def test_the_strong_baseline_recipe_is_the_plain_networks_own_and_any_models_by_name():
    section = {"lr": 1e-4, "epochs": 8, "schedule": "staged", "optimizer": "adam", "ema": 0.0}
    strong = registry.experiment_settings(section, {"name": "s", "model": "resnetv2_50"})
    assert strong["optimizer"] == "adamw" and strong["lr_schedule"] == "onecycle"
    assert strong["sampling"] == "balanced" and strong["sampling_power"] == 0.5
    assert strong["label_smoothing"] == 0.1 and strong["ema"] > 0 and strong["tta"] == "flip"
    assert strong["schedule"] == "single" and strong["frozen_layers"] == 0
    assert strong["epochs"] == 8  # the budget stays the section's
    fusion = registry.experiment_settings(section, {"name": "f", "model": "resnet50v2_deit",
                                                    "recipe": "strong_baseline"})
    assert fusion == strong  # the recipe replaces the model's own
    with pytest.raises(ConfigError, match="unknown recipe 'fast'"):
        registry.experiment_settings(section, {"name": "z", "model": "resnetv2_50",
                                               "recipe": "fast"})
    recipes = [*registry.RECIPES.values(), *(m.recipe for m in registry.MODELS.values())]
    assert not any({"epochs", "batch_size", "gpus"} & set(r) for r in recipes)
    schema = load_schema()["properties"]["experiments"]["items"]["properties"]["recipe"]["enum"]
    assert set(schema) == set(registry.RECIPES)


def test_the_plain_network_is_timms_with_a_linear_head():
    model = factory.create("resnetv2_50", num_classes=7, image_size=32, settings=SETTINGS,
                           weights_dir=None)
    assert [type(m).__name__ for m in model.children()] == ["ModuleList", "Linear"]
    assert model.head.in_features == model.backbones[0].num_features == 2048
    model.freeze_backbones()  # the staged schedule works on it too
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight",
                                                                             "head.bias"]


def test_hybrid_freezes_the_first_keras_layers_and_their_batchnorm_statistics():
    model = HybridClassifier("cnn_densenet121", 7)
    model.freeze_leading(55)  # paper 001: Keras's first 100 layers of DenseNet121
    layers = parameter_layers(model.backbones[0])
    assert not any(p.requires_grad for layer in layers[:55] for p in layer.parameters())
    assert all(p.requires_grad for layer in layers[55:] for p in layer.parameters())
    # the 55th is the 7th dense layer of block 2's second norm, as Keras's 100th layer is
    assert layers[54] is model.backbones[0].features.denseblock2.denselayer7.norm2
    model.train()
    frozen_norm = model.backbones[0].features.norm0
    assert not frozen_norm.training and model.cnn[2].training  # own BN layers still learn
    stats = frozen_norm.running_mean.clone()
    model(torch.rand(4, 3, 32, 32))
    assert torch.equal(stats, frozen_norm.running_mean)


def test_spatial_attention_weights_the_resnet_map_and_gives_heatmaps():
    torch.manual_seed(0)
    model = HybridClassifier("cnn_resnet50v2_attention", 7).eval()
    x = torch.rand(2, 3, 64, 64)
    fmap = model.backbones[0].forward_features(x)
    weights = model.attention.weights(fmap)
    assert weights.shape == (2, 1, 2, 2) and ((weights > 0) & (weights < 1)).all()
    assert torch.allclose(model.backbone_map(x), fmap * weights)
    heat = model.attention_map(x)
    assert torch.equal(heat, weights[:, 0])
    assert HybridClassifier("cnn_densenet121", 7).attention_map(x) is None


def test_asff_weights_are_a_softmax_and_fuse_conv4_with_conv5():
    torch.manual_seed(0)
    model = ASFFResNet50(2).eval()
    x = torch.rand(3, 3, 64, 64)
    weights = model.fusion_weights(x)
    assert weights.shape == (3, 2)
    assert torch.allclose(weights.sum(1), torch.ones(3)) and (weights > 0).all()
    c4, c5 = model.levels(x)
    assert c4.shape == c5.shape == (3, 1024, 4, 4)  # conv5 upsampled and projected onto conv4
    fused = c4 * weights[:, :1, None, None] + c5 * weights[:, 1:, None, None]
    assert torch.allclose(model.fusion(c4, c5), fused, atol=1e-6)


def test_dermagan_cnn_is_the_papers_layer_list_at_64_pixels():
    model = DermaGanCNN(4)
    flat = model.head[1]
    assert flat.in_features == 50 * 57 * 57  # 64 → pool 2/1 → 63 → conv 3 → 61 → pool 5/1 → 57
    assert [m.p for m in model.head if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 4)  # other sizes are resized


def test_efficientnet_b4_keeps_its_squeeze_excitation_blocks():
    model = factory.create("efficientnet_b4", num_classes=7, image_size=32,
                                 settings=SETTINGS, weights_dir=None)
    names = [name for name, _ in model.named_modules()]
    assert sum(name.endswith(".se") for name in names) == 32  # one per MBConv block


def test_binary_task_marks_mel_bcc_akiec_malignant():
    dx = np.array(list(CLASSES))
    assert dict(zip(dx, task_labels(dx, "binary"), strict=True)) == {
        "bkl": 0, "nv": 0, "df": 0, "mel": 1, "vasc": 0, "bcc": 1, "akiec": 1}
    assert list(task_labels(dx, "multiclass")) == list(range(7))
    assert task_classes("binary") == ("benign", "malignant")
    with pytest.raises(ValueError, match="task"):
        task_classes("ternary")


def test_val_loss_monitor_reduces_the_learning_rate_and_stops_early():
    """Paper 001's callbacks: LR x0.2 after a plateau, then early stopping, on val loss."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 7))
    rng = np.random.default_rng(0)
    data = ImageTensor(rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
                       rng.integers(0, 7, 40), torch.device("cpu"), (0.5,) * 3, (0.5,) * 3)
    cfg = train_config(epochs=60, batch_size=8, lr=0.05, augment=False, monitor="val_loss",
                      patience=4, plateau_factor=0.2, plateau_patience=2)
    history = fit(model, data, np.arange(32), np.arange(32, 40), cfg).history
    assert len(history) < 60  # random labels: val loss stops improving
    best = int(history["val_loss"].idxmin())
    assert len(history) == best + 1 + 4  # stopped after `patience` epochs without gain
    lrs = history["lr"].to_numpy()
    assert lrs[0] == 0.05 and lrs[-1] < 0.05
    steps = lrs[1:][lrs[1:] != lrs[:-1]] / lrs[:-1][lrs[1:] != lrs[:-1]]
    assert np.allclose(steps, 0.2)
