# Config validation and helpers shared by every rule file.
import re
import sys
from pathlib import Path

# The workflow runs the dermflow library that sits beside it, in this process and in
# every job (jobs inherit the environment, conda ones included).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from snakemake.logging import logger

from dermflow.jobenv import export_src, limit_gpu_jobs

export_src(SRC)

# Never more GPU jobs than GPUs: a job waits for its GPU, holding its cores, otherwise.
try:
    _gpu_note = limit_gpu_jobs(workflow)
except ValueError as err:
    raise WorkflowError(str(err)) from None
if _gpu_note:
    logger.info(_gpu_note)

from dermflow.config import validate_config
from dermflow.data.download import (
    EXTERNAL_TEST_FILES,
    IMAGE_ZIPS,
    MANIFEST,
    wanted_files,
)
from dermflow.data.preparation import recipe
from dermflow.data.validate import image_sources, raw_fingerprint
from dermflow.errors import ConfigError
from dermflow.evaluation.declared import declared_pairs
from dermflow.gan.registry import GENERATORS, generator_kind
from dermflow.models.registry import experiment_settings as merged_settings
from dermflow.reruns import stage_hash

try:
    config.update(
        validate_config(
            config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
        )
    )
except ConfigError as err:
    raise WorkflowError(str(err)) from None

DATASET = config["dataset"]
SOURCE = DATASET["source"]
RAW = DATASET["demo"]["path"] if SOURCE == "demo" else DATASET["path"]
ENV = "../../envs/dermflow.yaml"
DOWNLOAD_ZIPS = list(IMAGE_ZIPS)
EXTERNAL_FILES = list(EXTERNAL_TEST_FILES)
# Every file download_file may fetch (one job each), whether or not this run needs it.
DOWNLOADABLE = wanted_files(DATASET["metadata"], external_test=True)


def raw_metadata():
    """The metadata table (CSV or Dataverse's .tab) of the chosen source."""
    if SOURCE == "demo":
        return rules.make_demo_dataset.output.metadata
    return f"{RAW}/{DATASET['metadata']}"


def raw_images():
    """Zips/folders holding the raw images of the chosen source."""
    if SOURCE == "download":
        return [f"{RAW}/{name}" for name in DOWNLOAD_ZIPS]
    if SOURCE == "demo":
        return [rules.make_demo_dataset.output.images]
    if not Path(raw_metadata()).is_file():
        raise WorkflowError(
            f"dataset.path: no {Path(raw_metadata()).name} in {RAW} "
            "(dataset.source: local expects the published HAM10000 files there)"
        )
    sources = [str(p) for p in image_sources(RAW)]
    if not sources:
        raise WorkflowError(f"dataset.path: no image zip or folder in {RAW}")
    return sources


def local_fingerprint(*paths):
    """Fingerprint of raw files on disk (names, sizes, mtimes), for a rule param.

    Snakemake sees a folder input change only when the folder's own timestamp does,
    not when an image in it is overwritten; with this param it reruns validation.
    Raw data the workflow makes itself (download, demo) needs none.
    """
    return raw_fingerprint(paths) if SOURCE == "local" else ""


def external_images():
    """The ISIC 2018 Task 3 test images: the published zip, or its unpacked folder on disk."""
    zipped = f"{RAW}/{EXTERNAL_FILES[0]}"
    folder = zipped.removesuffix(".zip")
    if SOURCE == "local" and not Path(zipped).exists() and Path(folder).is_dir():
        return [folder]
    return [zipped]


def external_ground_truth():
    """The ISIC 2018 Task 3 ground truth; on disk, the Dataverse record's `.tab` name too."""
    csv = f"{RAW}/{EXTERNAL_FILES[1]}"
    tab = csv.removesuffix(".csv") + ".tab"
    if SOURCE == "local" and not Path(csv).exists() and Path(tab).exists():
        return tab
    return csv


def external_cache():
    """The external test set's image cache and index, when dataset.external_test is on."""
    if not DATASET["external_test"]:
        return {}
    out = rules.prepare_external.output
    return {"external_cache": out.cache, "external_index": out.index}


def hair_truth():
    """Ground-truth hair masks and hair-free images (demo dataset only)."""
    return [rules.make_demo_dataset.output.truth] if SOURCE == "demo" else []


def hair_index():
    """Hair-free images for the cache, or none: the raw images pass through."""
    return [rules.remove_hair.output.index] if config["hair_removal"]["enabled"] else []


def report_description():
    """The HTML report's opening page: the one the report rule wrote from the results, or,
    before a run has got that far, the static page that says so."""
    written = Path(rules.report.output.rst)
    return str(written.resolve()) if written.is_file() else "workflow/report/workflow.rst"


# Where each stage writes. With one split, everything is under results/ as it always was.
# Under cross-validation (cv.folds > 1) every fold has its folder: RUN holds its split,
# balanced datasets and classifiers (one per seed under EXP); UP holds the learning chain
# before them (baseline, attention maps, generator, synthetic images), per fold under
# grouped (each fold learns from its own training part), shared under paper (whose
# baseline and generator learn from every real image anyway). EVAL holds what is
# evaluated: the experiment itself, or its folds joined (dermflow.evaluation.crossval).
FOLDS, SEEDS = config["cv"]["folds"], config["cv"]["seeds"]
CV = FOLDS > 1
RUN = "results/cv/fold{fold}" if CV else "results"
UP = RUN if CV and config["protocol"] == "grouped" else "results"
EXP = (
    f"{RUN}/experiments/{{experiment}}/seed{{seed}}"
    if CV
    else f"{RUN}/experiments/{{experiment}}"
)
EVAL = "results/cv/experiments/{experiment}" if CV else "results/experiments/{experiment}"


wildcard_constraints:
    fold=r"\d+",
    seed=r"\d+",


def tag(root, name):
    """A log, benchmark or checkpoint name that carries the root's wildcards."""
    return f"cv/fold{{fold}}/{name}" if "{fold}" in root else name


def run_tag(name):
    """tag() for a classifier run (experiment and, under cross-validation, fold and seed)."""
    return f"cv/fold{{fold}}/{name}_{{experiment}}_seed{{seed}}" if CV else (
        f"{name}_{{experiment}}")


def fold_index(wildcards):
    """The fold a job belongs to (0 with one split)."""
    return int(wildcards.get("fold", 0))


def run_seed(wildcards):
    """A classifier run's training seed: the run's seed, plus the replicate under cross-
    validation (seed, seed + 1, ... for cv.seeds replicates per fold)."""
    return config["seed"] + int(wildcards.get("seed", 0))


def runs():
    """Every (fold, seed) classifier run."""
    return [(f, s) for f in range(FOLDS) for s in range(SEEDS)] if CV else [(0, 0)]


def at(path, fold=0, **names):
    """``path`` (a rule's output, say) with its fold (and other) wildcards filled in."""
    return str(path).format(fold=fold, **names)


def generator_folds():
    """The folds that train a generator: each fold under grouped cross-validation, one
    otherwise; none when no experiment uses a generator's images."""
    if not any(e["balance"] in GENERATORS for e in EXPERIMENTS.values()):
        return []
    return list(range(FOLDS)) if "{fold}" in UP else [0]


def split_of(root):
    """The split.csv a stage under ``root`` (RUN or UP) learns from: its fold's under
    cross-validation (fold_split), the one split otherwise (split_dataset)."""
    return rules.fold_split.output.split if "{fold}" in root else rules.split_dataset.output.split


def image_cache():
    """The image cache at the run's image_size and its index, named as the stages read them."""
    return {
        name: at(path, size=config["image_size"])
        for name, path in rules.cache_images.output.items()
    }


def final_targets():
    """Everything `snakemake` builds by default: the generator's stages (baseline, attention
    maps, GAN, synthetic images and their check) only when an experiment uses its images."""
    split = rules.split_folds if CV else rules.split_dataset
    targets = [
        rules.validate_dataset.output.quarantine,
        split.output.summary,
        rules.report.output.markdown,
    ]
    if generator_folds():
        for f in generator_folds():
            targets += [
                at(rules.train_baseline.output.metrics, f),
                at(rules.extract_attention.output.attention, f),
                at(rules.check_synthetic.output.quality, f),
            ]
        targets += [at(rules.split_pool.output.split, f) for f in range(FOLDS)]
    if CV:
        targets += [at(rules.summarize_fold.output.summary, f) for f in range(FOLDS)]
    targets += per_experiment(rules.evaluate.output.evaluation).values()
    if config["hair_removal"]["enabled"]:
        targets.append(rules.remove_hair.output.metrics)
    return targets


EXPERIMENTS = {e["name"]: e for e in config["experiments"]}


def per_experiment(path):
    """Experiment name -> ``path`` (a pattern in {experiment}) for that experiment."""
    return {name: at(path, experiment=name) for name in EXPERIMENTS}


def gan_attention():
    """The attention maps, for a generator that edits a source image under its map."""
    if not generator_kind(config["gan"]["kind"]).needs_attention:
        return {}
    return {"attention": rules.extract_attention.output.attention}


def generator_pool(wildcards):
    """What a generator-balanced dataset reads beside the cache: the pooled split and the
    synthetic images' manifest (none for the other balance modes)."""
    if wildcards.balance not in GENERATORS:
        return {}
    fold = fold_index(wildcards)
    return {
        "synthetic_split": at(rules.split_pool.output.split, fold),
        "synthetic_manifest": at(rules.generate_synthetic.output.manifest, fold),
    }


def experiment_settings(name):
    """The classifier section, the model's paper recipe, the experiment's overrides."""
    return merged_settings(config["classifier"], EXPERIMENTS[name])


def balanced_data(balance, fold=0):
    """A balance mode's dataset table and, for a mode that makes images (a generator's,
    augment's), their array beside the cache: ``dataset`` and ``extra``."""
    made = {
        config["gan"]["kind"]: rules.generate_synthetic.output.images,
        "augment": rules.build_augmented_dataset.output.images,
    }
    table = rules.build_augmented_dataset if balance == "augment" else rules.build_dataset
    files = {"dataset": at(table.output.table, fold, balance=balance)}
    if balance in made:
        files["extra"] = at(made[balance], fold)
    return files


def experiment_data(wildcards):
    """The dataset table, the image cache and the balance mode's extra images of a run."""
    balance = EXPERIMENTS[wildcards.experiment]["balance"]
    return {
        **balanced_data(balance, fold_index(wildcards)),
        "cache": image_cache()["cache"],
    }


def run_files(fold, name, seed):
    """A classifier run's predictions and metrics, as joining runs reads them."""
    run = dict(experiment=name, seed=seed)
    return (
        at(rules.predict.output.predictions, fold, **run),
        at(rules.train_classifier.output.metrics, fold, **run),
    )


def experiment_runs(name):
    """(fold, seed) -> run_files of every run of experiment ``name`` (cross_predict)."""
    return {(f, s): run_files(f, name, s) for f, s in runs()}


def fold_runs(fold):
    """(experiment, seed) -> run_files of every run of fold ``fold`` (summarize_fold)."""
    return {(name, s): run_files(fold, name, s) for name in EXPERIMENTS for s in range(SEEDS)}


def files_of(table):
    """The paths in a mapping's values (tuples of paths, None for one absent), as one list:
    the input of a rule whose params pass the mapping itself."""
    return [path for paths in table.values() for path in paths if path]


def evaluated(name):
    """An experiment's ``predictions``, ``metrics`` or (cross-validation only) ``runs`` file
    as evaluation reads it: its one run's, or its runs joined (cross_predict); a pattern in
    {experiment}."""
    if CV:
        return getattr(rules.cross_predict.output, name)
    run = {"predictions": rules.predict, "metrics": rules.train_classifier}[name]
    return getattr(run.output, name)


def report_datasets():
    """Label -> (table, extra images or None) of every dataset the leakage audit reads."""
    balances = sorted({e["balance"] for e in EXPERIMENTS.values()})
    datasets = {}
    for f in range(FOLDS):
        for b in balances:
            files = balanced_data(b, f)
            datasets[f"fold{f}_{b}" if CV else b] = (files["dataset"], files.get("extra"))
    return datasets


def report_inputs(wildcards):
    """Every experiment's evaluation and metrics, every dataset, comparisons, the
    quarantines (the external test set's too, when there is one); the report rule's
    params say which experiment or dataset each of the lists' files belongs to."""
    inputs = {
        "cache": image_cache()["cache"],
        "comparisons": rules.compare.output.table,
        "quarantine": rules.validate_dataset.output.quarantine,
    }
    if DATASET["external_test"]:
        inputs["external_quarantine"] = rules.prepare_external.output.quarantine
    inputs["quality"] = [at(rules.check_synthetic.output.quality, f) for f in generator_folds()]
    inputs["evaluations"] = list(per_experiment(rules.evaluate.output.evaluation).values())
    inputs["metrics"] = list(per_experiment(evaluated("metrics")).values())
    inputs["datasets"] = files_of(report_datasets())
    return inputs
