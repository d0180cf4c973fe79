"""Every classifier an experiment can name: its source paper and the way that paper trains it.

An experiment's training settings are the ``classifier`` config section, then its
model's recipe, then the experiment's own ``overrides``. Recipes hold how a paper
trains (schedule, freezing, learning rate, augmentation, class weights, early
stopping, LR-on-plateau), never the run's budget (epochs, batch size, GPUs),
which the config section sets for every experiment. No torch here: the workflow
reads this while it plans.
"""

from __future__ import annotations

from typing import Any

PAPER_000 = "000: C'GAN + ResNet50V2-DeiT fusion (Table 5 ablations)"
# Paper 001: Adam 1e-4, class weights, Keras augmentation, early stopping (val loss,
# patience 10), LR x0.2 after 5 epochs without val-loss gain, first 100 Keras layers
# frozen (55 parameter-owning layers of DenseNet121, 53 of ResNet50V2).
RECIPE_001 = {"schedule": "single", "lr": 1.0e-4, "augment": True, "augmentation": "keras",
              "class_weights": True, "monitor": "val_loss", "patience": 10,
              "plateau_factor": 0.2, "plateau_patience": 5}
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet50v2_deit": (PAPER_000, {}),
    "resnet50v2_mobilenetv2": (PAPER_000, {}),
    "resnet50v2_efficientnetv2": (PAPER_000, {}),
    "resnet50v2_mobilenetv2_efficientnetv2": (PAPER_000, {}),
    "cnn_densenet121": ("001: CNN-DenseNet121 hybrid", {**RECIPE_001, "frozen_layers": 55}),
    "cnn_resnet50v2_attention": ("001: CNN-ResNet50V2 hybrid with spatial attention",
                                 {**RECIPE_001, "frozen_layers": 53}),
    # Paper 002 fine-tunes the whole network with Adam and a validation-driven LR
    # scheduler whose numbers it does not give: paper 001's plateau settings are used.
    "efficientnet_b4": ("002: EfficientNet-B4 on GAN-augmented data",
                        {"schedule": "single", "frozen_layers": 0, "monitor": "val_loss",
                         "plateau_factor": 0.2, "plateau_patience": 5}),
    # Paper 003: Adam 2e-4, betas (0.5, 0.999), no augmentation besides the GAN's images.
    "dermagan_cnn": ("003: DermaGAN's custom CNN",
                     {"schedule": "single", "frozen_layers": 0, "lr": 2.0e-4,
                      "betas": [0.5, 0.999], "augment": False}),
    # Paper 004: Adam 1e-4, the whole network trained.
    "asff_resnet50": ("004: ASFF-ResNet50", {"schedule": "single", "frozen_layers": 0,
                                             "lr": 1.0e-4}),
}


def experiment_settings(classifier: dict[str, Any], experiment: dict[str, Any],
                        ) -> dict[str, Any]:
    """The classifier section, then the model's recipe, then the experiment's overrides."""
    model = experiment["model"]
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
    merged = {**classifier, **MODELS[model][1], **experiment.get("overrides", {})}
    return {k: merged[k] for k in sorted(merged)}  # Snakemake compares params as written
