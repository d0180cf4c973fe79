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
CACHE = f"results/cache/images_{config['image_size']}.npy"
CACHE_INDEX = f"results/cache/index_{config['image_size']}.csv"
DOWNLOAD_ZIPS = list(IMAGE_ZIPS)
EXTERNAL_FILES = list(EXTERNAL_TEST_FILES)
# Every file download_file may fetch (one job each), whether or not this run needs it.
DOWNLOADABLE = wanted_files(DATASET["metadata"], external_test=True)


def raw_metadata():
    """The metadata table (CSV or Dataverse's .tab) of the chosen source."""
    name = "HAM10000_metadata.csv" if SOURCE == "demo" else DATASET["metadata"]
    return f"{RAW}/{name}"


def raw_images():
    """Zips/folders holding the raw images of the chosen source."""
    if SOURCE == "download":
        return [f"{RAW}/{name}" for name in DOWNLOAD_ZIPS]
    if SOURCE == "demo":
        return [f"{RAW}/HAM10000_images_part_1"]
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
    size = config["image_size"]
    return {
        "external_cache": f"results/external/images_{size}.npy",
        "external_index": f"results/external/index_{size}.csv",
    }


def hair_truth():
    """Ground-truth hair masks and hair-free images (demo dataset only)."""
    return [f"{RAW}/hair_truth"] if SOURCE == "demo" else []


def hair_index():
    """Hair-free images for the cache, or none: the raw images pass through."""
    return ["results/hair/index.csv"] if config["hair_removal"]["enabled"] else []


def report_description():
    """The HTML report's opening page: the one the report rule wrote from the results, or,
    before a run has got that far, the static page that says so."""
    written = Path("results/report/workflow.rst")
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
    """``path`` with its fold (and other) wildcards filled in."""
    return path.format(fold=fold, **names) if ("{" in path) else path


def generator_folds():
    """The folds that train a generator: each fold under grouped cross-validation, one
    otherwise; none when no experiment uses a generator's images."""
    if not any(e["balance"] in GENERATORS for e in EXPERIMENTS.values()):
        return []
    return list(range(FOLDS)) if "{fold}" in UP else [0]


def final_targets():
    """Everything `snakemake` builds by default: the generator's stages (baseline, attention
    maps, GAN, synthetic images and their check) only when an experiment uses its images."""
    targets = [
        "results/data/quarantine.csv",
        *(["results/cv/summary.json"] if CV else ["results/split/summary.json"]),
        "results/report/ablation.md",
    ]
    if generator_folds():
        for f in generator_folds():
            targets += [
                at(f"{UP}/baseline/metrics.json", f),
                at(f"{UP}/attention/attention.npy", f),
                at(f"{UP}/synthetic/quality.json", f),
            ]
        targets += [at(f"{RUN}/synthetic/split.csv", f) for f in range(FOLDS)]
    if CV:
        targets += [f"results/cv/fold{f}/summary.csv" for f in range(FOLDS)]
    targets += expand(f"{EVAL}/evaluation.json", experiment=EXPERIMENTS)
    if config["hair_removal"]["enabled"]:
        targets.append("results/hair/metrics.json")
    return targets


EXPERIMENTS = {e["name"]: e for e in config["experiments"]}
SYNTHETIC = f"{UP}/synthetic/synthetic.npy"
EXTRA_ARRAYS = {
    config["gan"]["kind"]: SYNTHETIC,
    "augment": f"{RUN}/datasets/augment/augmented.npy",
}
# Generators that edit a source image under its attention map need the maps.
GAN_ATTENTION = (
    {"attention": f"{UP}/attention/attention.npy"}
    if generator_kind(config["gan"]["kind"]).needs_attention
    else {}
)


def experiment_settings(name):
    """The classifier section, the model's paper recipe, the experiment's overrides."""
    return merged_settings(config["classifier"], EXPERIMENTS[name])


def experiment_data(wildcards):
    """The dataset table, the image cache and the balance mode's extra images of a run."""
    balance = EXPERIMENTS[wildcards.experiment]["balance"]
    fold = fold_index(wildcards)
    inputs = {
        "dataset": at(f"{RUN}/datasets/{balance}/dataset.csv", fold),
        "cache": CACHE,
    }
    if balance in EXTRA_ARRAYS:
        inputs["extra"] = at(EXTRA_ARRAYS[balance], fold)
    return inputs


RUN_FILES = (("predictions", "predictions.csv"), ("metrics", "metrics.json"))  # of a run


def dataset_labels():
    """(label, fold, balance) of every dataset the leakage audit reads."""
    balances = sorted({e["balance"] for e in EXPERIMENTS.values()})
    return [(f"fold{f}_{b}" if CV else b, f, b) for f in range(FOLDS) for b in balances]


def report_inputs(wildcards):
    """Every experiment's evaluation and metrics, every dataset, comparisons, the
    quarantines (the external test set's too, when there is one)."""
    inputs = {
        "cache": CACHE,
        "comparisons": "results/report/comparisons.csv",
        "quarantine": "results/data/quarantine.csv",
    }
    if DATASET["external_test"]:
        inputs["external_quarantine"] = "results/external/quarantine.csv"
    inputs["quality"] = [at(f"{UP}/synthetic/quality.json", f) for f in generator_folds()]
    for name in EXPERIMENTS:
        inputs[f"evaluation_{name}"] = f"{EVAL}/evaluation.json".format(experiment=name)
        inputs[f"metrics_{name}"] = f"{EVAL}/metrics.json".format(experiment=name)
    for label, fold, balance in dataset_labels():
        inputs[f"dataset_{label}"] = at(f"{RUN}/datasets/{balance}/dataset.csv", fold)
        if balance in EXTRA_ARRAYS:
            inputs[f"extra_{label}"] = at(EXTRA_ARRAYS[balance], fold)
    return inputs
