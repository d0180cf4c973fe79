"""Every classifier an experiment can name: its builder, its source paper, and the way that
paper trains it. The one table to extend: a new model is a family module with a ``build``
function and one entry here (the config schema, the tests and the README follow this table).

An experiment's training settings are the ``classifier`` config section, then its
model's recipe (or the named recipe of its ``recipe`` key, from RECIPES), then the
experiment's own ``overrides``. Recipes hold how a paper trains (schedule, freezing,
optimizer, learning rate and its schedule, augmentation, class weights or sampling,
early stopping, EMA, test-time augmentation), never the run's budget (epochs, batch
size, images per epoch, GPUs), which the config section sets for every experiment. No
torch here: the workflow reads this while it plans; builders are named by dotted path and
imported only when a job builds the model (dermflow.models.factory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dermflow.errors import ConfigError


@dataclass(frozen=True)
class Classifier:
    """A registered classifier: ``builder`` is ``module:function`` with the signature
    ``build(name, *, num_classes, image_size, settings, weights_dir)``; ``options`` are the
    variant's own (its backbones, say), read by its family module; ``patch_size``: a vision
    transformer inside cuts patches of this side, which image_size must be divisible by."""

    builder: str
    paper: str
    recipe: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    patch_size: int = 1


PAPER_000 = "000: C'GAN + ResNet50V2-DeiT fusion (Table 5 ablations)"
FUSION = "dermflow.models.fusion:build"
HYBRID = "dermflow.models.hybrids:build"
RESNET, DEIT = "resnetv2_50", "deit_small_distilled_patch16_224"
MOBILENET, EFFICIENTNET = "mobilenetv2_100", "tf_efficientnetv2_b0"
# Paper 001: Adam 1e-4, class weights, Keras augmentation, early stopping (val loss,
# patience 10), LR x0.2 after 5 epochs without val-loss gain, first 100 Keras layers
# frozen (55 parameter-owning layers of DenseNet121, 53 of ResNet50V2).
RECIPE_001 = {"schedule": "single", "lr": 1.0e-4, "augment": True, "augmentation": "keras",
              "class_weights": True, "monitor": "val_loss", "patience": 10,
              "lr_schedule": "plateau", "plateau_factor": 0.2, "plateau_patience": 5}
# Named recipes, which an experiment's ``recipe`` key applies to any model.
RECIPES: dict[str, dict[str, Any]] = {
    # How current practice trains a plain network, the reference every method must beat
    # (README, "The strong baseline"): the whole network, AdamW with decoupled weight
    # decay, a one-cycle learning rate (5 warm-up epochs, per batch), label smoothing 0.1,
    # square-root class-balanced sampling, an EMA of the weights (the model validated and
    # kept), horizontal-flip test-time augmentation; no early stopping (the cycle runs out).
    "strong_baseline": {
        "schedule": "single", "frozen_layers": 0, "optimizer": "adamw", "lr": 1.0e-3,
        "weight_decay": 0.05, "betas": [0.9, 0.999], "lr_schedule": "onecycle",
        "lr_warmup_epochs": 5, "plateau_patience": 0, "label_smoothing": 0.1,
        "sampling": "balanced", "sampling_power": 0.5, "class_weights": False,
        "augment": True, "augmentation": "dermoscopy", "ema": 0.999, "tta": "flip",
        "monitor": "val_macro_f1", "patience": 0},
}
MODELS: dict[str, Classifier] = {
    # the strong baseline: timm ResNetV2-50 alone (pooled features, a linear head)
    "resnetv2_50": Classifier("dermflow.models.plain:build",
                              "strong baseline: current practice, no source paper",
                              RECIPES["strong_baseline"], {"backbone": RESNET}),
    # the same at CPU scale (profiles/cpu-science): timm ResNet-18, 11M parameters
    "resnet18": Classifier("dermflow.models.plain:build",
                           "strong baseline at CPU scale: current practice, no source paper",
                           RECIPES["strong_baseline"], {"backbone": "resnet18"}),
    # fusion: the backbones' features fused (cross-attention when one is a transformer)
    "resnet50v2_deit": Classifier(FUSION, PAPER_000, options={"backbones": (RESNET, DEIT)},
                                  patch_size=16),
    "resnet50v2_mobilenetv2": Classifier(FUSION, PAPER_000,
                                         options={"backbones": (RESNET, MOBILENET)}),
    "resnet50v2_efficientnetv2": Classifier(FUSION, PAPER_000,
                                            options={"backbones": (RESNET, EFFICIENTNET)}),
    "resnet50v2_mobilenetv2_efficientnetv2": Classifier(
        FUSION, PAPER_000, options={"backbones": (RESNET, MOBILENET, EFFICIENTNET)}),
    "cnn_densenet121": Classifier(HYBRID, "001: CNN-DenseNet121 hybrid",
                                  {**RECIPE_001, "frozen_layers": 55},
                                  {"backbone": "densenet121", "attention": False}),
    "cnn_resnet50v2_attention": Classifier(
        HYBRID, "001: CNN-ResNet50V2 hybrid with spatial attention",
        {**RECIPE_001, "frozen_layers": 53}, {"backbone": RESNET, "attention": True}),
    # Paper 002 fine-tunes the whole network with Adam and a validation-driven LR
    # scheduler whose numbers it does not give: paper 001's plateau settings are used.
    # (one backbone, its SE blocks included)
    "efficientnet_b4": Classifier(FUSION, "002: EfficientNet-B4 on GAN-augmented data",
                                  {"schedule": "single", "frozen_layers": 0,
                                   "monitor": "val_loss", "lr_schedule": "plateau",
                                   "plateau_factor": 0.2, "plateau_patience": 5},
                                  {"backbones": ("efficientnet_b4",)}),
    # Paper 003: Adam 2e-4, betas (0.5, 0.999), no augmentation besides the GAN's images.
    "dermagan_cnn": Classifier("dermflow.models.dermagan_cnn:build", "003: DermaGAN's custom CNN",
                               {"schedule": "single", "frozen_layers": 0, "lr": 2.0e-4,
                                "betas": [0.5, 0.999], "augment": False}),
    # Paper 004: Adam 1e-4, the whole network trained.
    "asff_resnet50": Classifier("dermflow.models.asff:build", "004: ASFF-ResNet50",
                                {"schedule": "single", "frozen_layers": 0, "lr": 1.0e-4}),
}


def entry(model: str) -> Classifier:
    """The registry entry of ``model``; ConfigError names the known ones."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; one of {', '.join(MODELS)} "
                          "(dermflow.models.registry)")
    return MODELS[model]


def recipe(experiment: dict[str, Any]) -> dict[str, Any]:
    """The experiment's recipe: the one its ``recipe`` key names, else its model's own."""
    name = experiment.get("recipe")
    if name is None:
        return entry(experiment["model"]).recipe
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; one of {', '.join(RECIPES)} "
                          "(dermflow.models.registry)")
    return RECIPES[name]


def experiment_settings(classifier: dict[str, Any], experiment: dict[str, Any],
                        ) -> dict[str, Any]:
    """The classifier section, then the recipe, then the experiment's overrides."""
    merged = {**classifier, **recipe(experiment), **experiment.get("overrides", {})}
    return {k: merged[k] for k in sorted(merged)}  # Snakemake compares params as written
