"""The dermflow modules each rule's job runs, whose code hash (dermflow.codehash) is the
rule's ``code`` param: editing a module reruns exactly the jobs that execute it.

A rule's entry is what its workflow script imports. A classifier job also runs its model's
family module and a generator job its kind's, which the registries name by dotted path and
import only at run time; those are added per job, so editing one model retrains only the
experiments that use it.
"""

from __future__ import annotations

from dermflow.codehash import code_hash
from dermflow.gan.registry import generator_kind
from dermflow.models.registry import entry

CPU, GPU = "dermflow.stage", "dermflow.gpustage"
SPLIT = ("dermflow.data.split", CPU)
STAGES: dict[str, tuple[str, ...]] = {
    "make_demo_dataset": ("dermflow.data.demo", CPU),
    "validate_dataset": ("dermflow.data.validate", CPU),
    "prepare_external": ("dermflow.data.external", "dermflow.data.hair", CPU),
    "remove_hair": ("dermflow.data.hair", "dermflow.atomic", CPU),
    "cache_images": ("dermflow.data.cache", CPU),
    "split_dataset": SPLIT,
    "split_folds": SPLIT,
    "fold_split": SPLIT,
    "split_pool": SPLIT,
    "train_baseline": ("dermflow.training.baseline", GPU),
    "extract_attention": ("dermflow.training.attention", GPU),
    "train_gan": ("dermflow.gan.training", GPU),
    "generate_synthetic": ("dermflow.gan.synthesis", GPU),
    "check_synthetic": ("dermflow.gan.quality", GPU),
    "build_dataset": ("dermflow.experiments.datasets", CPU),
    "build_augmented_dataset": ("dermflow.experiments.datasets", CPU),
    # its model records the images' preparation, which dermflow.data.preparation computes
    # (while planning: the rule's preparation param)
    "train_classifier": ("dermflow.experiments.classifier", "dermflow.data.preparation", GPU),
    "predict": ("dermflow.experiments.predict", "dermflow.training.batches", GPU),
    "cross_predict": ("dermflow.evaluation.crossval", CPU),
    "summarize_fold": ("dermflow.evaluation.crossval", CPU),
    "evaluate": ("dermflow.evaluation.evaluate", CPU),
    "compare": ("dermflow.evaluation.compare", CPU),
    "report": ("dermflow.evaluation.report", CPU),
}
BY_MODEL = ("train_classifier", "predict")  # the job builds its experiment's model
BY_GENERATOR = ("train_gan", "generate_synthetic")  # the job builds gan.kind's networks


def stage_modules(rule: str, *, model: str | None = None,
                  generator: str | None = None) -> tuple[str, ...]:
    """The modules a job of ``rule`` imports: its entry, plus the family module of its
    experiment's ``model`` or of generator kind ``generator`` where the rule builds one."""
    modules = STAGES[rule]
    for rules, key, name, family in (
            (BY_MODEL, "model", model, lambda m: entry(m).builder.split(":")[0]),
            (BY_GENERATOR, "generator kind", generator, lambda g: generator_kind(g).module)):
        if rule in rules:
            if name is None:
                raise ValueError(f"rule {rule}: the experiment's {key} is needed")
            modules += (family(name),)
    return modules


def stage_hash(rule: str, *, model: str | None = None, generator: str | None = None) -> str:
    """The ``code`` param of a job of ``rule`` (see stage_modules)."""
    return code_hash(*stage_modules(rule, model=model, generator=generator))
