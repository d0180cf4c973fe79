# Config validation and helpers shared by every rule file.
import sys
from pathlib import Path

# The workflow runs the dermflow library that sits beside it, in this process and in
# every job (jobs inherit the environment, conda ones included).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from dermflow.jobenv import export_src

export_src(SRC)

from dermflow.codehash import code_hash
from dermflow.config import validate_config
from dermflow.data.validate import image_sources
from dermflow.errors import ConfigError
from dermflow.evaluation.declared import declared_pairs
from dermflow.gan.registry import GENERATORS, generator_kind
from dermflow.models.registry import experiment_settings as merged_settings

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
DOWNLOAD_ZIPS = ["HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip"]
EXTERNAL_FILES = [
    "ISIC2018_Task3_Test_Images.zip",
    "ISIC2018_Task3_Test_GroundTruth.csv",
]


def raw_metadata():
    """The metadata CSV of the chosen source."""
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


def external_images():
    """The ISIC 2018 Task 3 test images: the published zip, or its unpacked folder on disk."""
    zipped = f"{RAW}/{EXTERNAL_FILES[0]}"
    folder = zipped.removesuffix(".zip")
    if SOURCE == "local" and not Path(zipped).exists() and Path(folder).is_dir():
        return [folder]
    return [zipped]


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


def final_targets():
    """Everything `snakemake` builds by default: the generator's stages (baseline, attention
    maps, GAN, synthetic images and their check) only when an experiment uses its images."""
    targets = [
        "results/data/quarantine.csv",
        "results/split/summary.json",
        *expand("results/experiments/{name}/predictions.csv", name=EXPERIMENTS),
        "results/report/ablation.md",
    ]
    if any(e["balance"] in GENERATORS for e in EXPERIMENTS.values()):
        targets[2:2] = [
            "results/baseline/metrics.json",
            "results/attention/attention.npy",
            "results/synthetic/quality.json",
            "results/synthetic/split.csv",
        ]
    if config["hair_removal"]["enabled"]:
        targets.append("results/hair/metrics.json")
    return targets


EXPERIMENTS = {e["name"]: e for e in config["experiments"]}
EXTRA_ARRAYS = {
    config["gan"]["kind"]: "results/synthetic/synthetic.npy",
    "augment": "results/datasets/augment/augmented.npy",
}
# Generators that edit a source image under its attention map need the maps.
GAN_ATTENTION = (
    {"attention": "results/attention/attention.npy"}
    if generator_kind(config["gan"]["kind"]).needs_attention
    else {}
)


def experiment_settings(name):
    """The classifier section, the model's paper recipe, the experiment's overrides."""
    return merged_settings(config["classifier"], EXPERIMENTS[name])


def experiment_data(wildcards):
    """The dataset table, the image cache and the balance mode's extra images."""
    balance = EXPERIMENTS[wildcards.experiment]["balance"]
    inputs = {
        "dataset": f"results/datasets/{balance}/dataset.csv",
        "cache": CACHE,
    }
    if balance in EXTRA_ARRAYS:
        inputs["extra"] = EXTRA_ARRAYS[balance]
    return inputs


def report_inputs(wildcards):
    """Every experiment's evaluation and metrics, each balance mode's dataset, comparisons."""
    inputs = {
        "cache": CACHE,
        "comparisons": "results/report/comparisons.csv",
        "quarantine": "results/data/quarantine.csv",
    }
    for name in EXPERIMENTS:
        inputs[f"evaluation_{name}"] = f"results/experiments/{name}/evaluation.json"
        inputs[f"metrics_{name}"] = f"results/experiments/{name}/metrics.json"
    for balance in sorted({e["balance"] for e in EXPERIMENTS.values()}):
        inputs[f"dataset_{balance}"] = f"results/datasets/{balance}/dataset.csv"
        if balance in EXTRA_ARRAYS:
            inputs[f"extra_{balance}"] = EXTRA_ARRAYS[balance]
    return inputs
