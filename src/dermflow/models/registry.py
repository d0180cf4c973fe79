"""Every classifier an experiment can name: its builder, its source paper, and the way that
paper trains it. The one table to extend: a new model is a family module with a ``build``
function and one entry here (the config schema, the tests and the README follow this table).

An experiment's training settings are the ``classifier`` config section, then its
model's recipe, then the experiment's own ``overrides``. Recipes hold how a paper
trains (schedule, freezing, learning rate, augmentation, class weights, early
stopping, LR-on-plateau), never the run's budget (epochs, batch size, GPUs),
which the config section sets for every experiment. No torch here: the workflow
reads this while it plans; builders are named by dotted path and imported only when
a job builds the model (dermflow.models.factory).
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
              "plateau_factor": 0.2, "plateau_patience": 5}
MODELS: dict[str, Classifier] = {
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
                                   "monitor": "val_loss", "plateau_factor": 0.2,
                                   "plateau_patience": 5},
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


def experiment_settings(classifier: dict[str, Any], experiment: dict[str, Any],
                        ) -> dict[str, Any]:
    """The classifier section, then the model's recipe, then the experiment's overrides."""
    merged = {**classifier, **entry(experiment["model"]).recipe,
              **experiment.get("overrides", {})}
    return {k: merged[k] for k in sorted(merged)}  # Snakemake compares params as written
