"""The declared comparisons: the claims a report makes, fixed before any result is seen.

``report.comparisons`` lists experiment pairs; by default the proposed model on C'GAN
data is compared with the same model and task under each baseline balance mode
(classical augmentation, real images repeated to the same counts, no balancing) and
with the strong baseline (timm ResNetV2-50 alone on the real images, trained by its own
modern recipe), where those experiments exist. Read while the workflow plans and by
config validation, so nothing heavy is imported here.
"""

from __future__ import annotations

from typing import Any

from dermflow.errors import ConfigError

PROPOSED = ("cgan", "resnet50v2_deit")  # (balance, model) of the source paper's method
BASELINES = ("augment", "oversample", "none")  # what the proposed model faces by default
STRONG_BASELINE = ("none", "resnetv2_50", "strong_baseline")  # (balance, model, recipe)


def is_strong_baseline(experiment: dict[str, Any]) -> bool:
    """The strong baseline: its model on the real images by its own (or the named) recipe."""
    balance, model, recipe = STRONG_BASELINE
    return (experiment["balance"], experiment["model"]) == (balance, model) and \
        experiment.get("recipe", recipe) == recipe


def declared_pairs(experiments: list[dict[str, Any]], pairs: list[list[str]] | None,
                   ) -> list[tuple[str, str]]:
    """The comparisons the report claims: ``pairs`` as configured, or the defaults among the
    experiments that exist (the proposed model vs the same model and task per baseline)."""
    by_name = {e["name"]: e for e in experiments}
    if pairs is not None:
        for k, pair in enumerate(pairs):
            for name in pair:
                if name not in by_name:
                    raise ConfigError(f"report.comparisons[{k}]: unknown experiment {name!r} "
                                      f"(experiments: {', '.join(by_name)})")
            a, b = (by_name[n] for n in pair)
            if a.get("task", "multiclass") != b.get("task", "multiclass"):
                raise ConfigError(f"report.comparisons[{k}]: {pair[0]} and {pair[1]} have "
                                  "different tasks and cannot be compared")
        return [(a, b) for a, b in pairs]
    found = []
    for e in experiments:
        if (e["balance"], e["model"]) != PROPOSED:
            continue
        task = e.get("task", "multiclass")
        for balance in BASELINES:
            found += [(e["name"], o["name"]) for o in experiments
                      if o["balance"] == balance and o["model"] == e["model"]
                      and o.get("task", "multiclass") == task]
        found += [(e["name"], o["name"]) for o in experiments
                  if is_strong_baseline(o) and o.get("task", "multiclass") == task]
    return found
