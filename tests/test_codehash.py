"""The code hash follows exactly the dermflow code a job runs, so a library edit reruns the
stages that execute it and no other."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import REPO

from dermflow import codehash, reruns
from dermflow.gan.registry import GENERATORS
from dermflow.models.registry import MODELS

# Imports each module in turn, dermflow unloaded in between (third-party packages stay, so
# torch loads once), and prints what each loaded: what a job importing it runs.
IMPORTED = """
import importlib, json, sys
loaded = {}
for name in sys.argv[1:]:
    for module in [m for m in sys.modules if m.split(".")[0] == "dermflow"]:
        del sys.modules[module]
    importlib.import_module(name)
    loaded[name] = sorted(m for m in sys.modules if m.split(".")[0] == "dermflow")
print(json.dumps(loaded))
"""


def jobs() -> dict[str, tuple[str, ...]]:
    """Every kind of job: a rule, per model or generator kind where its code depends on it."""
    out = {}
    for rule in reruns.STAGES:
        if rule in reruns.BY_MODEL:
            out.update({f"{rule}[{m}]": reruns.stage_modules(rule, model=m) for m in MODELS})
        elif rule in reruns.BY_GENERATOR:
            out.update({f"{rule}[{g}]": reruns.stage_modules(rule, generator=g)
                        for g in GENERATORS})
        else:
            out[rule] = reruns.stage_modules(rule)
    return out


def rerun_table(closure) -> dict[str, set[str]]:
    """Module -> the jobs whose code hash an edit of it changes, given each job's closure."""
    table = defaultdict(set)
    for job, modules in jobs().items():
        for module in closure(modules):
            table[module].add(job)
    return table


@pytest.fixture(scope="module")
def imported() -> dict[str, set[str]]:
    names = sorted({m for modules in jobs().values() for m in modules})
    run = subprocess.run([sys.executable, "-c", IMPORTED, *names], capture_output=True,
                         text=True, check=True)
    return {name: set(loaded) for name, loaded in json.loads(run.stdout).items()}


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    copy = tmp_path / "dermflow"
    shutil.copytree(codehash.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "PACKAGE_DIR", copy)
    return copy


def edit(path) -> None:
    with open(path, "a") as fh:
        fh.write("\n# an edit\n")


def test_an_edit_reruns_exactly_the_jobs_that_import_the_module(imported):
    """Per module of the library, the jobs its edit reruns are the jobs that load it."""
    hashed = rerun_table(lambda modules: codehash.module_closure(*modules))
    loaded = rerun_table(lambda modules: set().union(*(imported[m] for m in modules)))
    wrong = {module: {"hashed": sorted(hashed[module]), "loaded": sorted(loaded[module])}
             for module in sorted(hashed.keys() | loaded.keys())
             if hashed[module] != loaded[module]}
    assert not wrong


def test_a_model_family_reruns_only_its_experiments():
    table = rerun_table(lambda modules: codehash.module_closure(*modules))
    assert table["dermflow.models.asff"] == {"train_classifier[asff_resnet50]",
                                             "predict[asff_resnet50]"}
    assert table["dermflow.gan.dcgan"] == {"train_gan[dcgan]", "generate_synthetic[dcgan]"}
    assert not {"train_baseline", "build_dataset"} & table["dermflow.gan.cgan"]


def test_an_evaluation_metric_reruns_evaluation_only():
    """Training picks its epoch with dermflow.evaluation.selection alone, so editing the
    full metric table retrains nothing; editing what picks the epoch retrains every
    classifier (the baseline included), and no generator: those keep their last epoch."""
    table = rerun_table(lambda modules: codehash.module_closure(*modules))
    assert table["dermflow.evaluation.metrics"] == {
        "evaluate", "compare", "report", "cross_predict", "summarize_fold"}
    rules = {job.split("[")[0] for job in table["dermflow.evaluation.selection"]}
    assert rules == table["dermflow.evaluation.metrics"] | {
        "train_baseline", "train_classifier", "predict"}


def test_the_engine_reruns_every_trainer_and_the_classifier_loop_no_generator():
    """Classifiers and generators train on one engine; the classifier's own steps
    (dermflow.training.loop) are not the generators' code, and synthesis loads the
    generator file (dermflow.gan.networks) without the training loop."""
    table = rerun_table(lambda modules: codehash.module_closure(*modules))
    trainers = {"train_baseline", "train_classifier", "train_gan"}
    engine = {job.split("[")[0] for job in table["dermflow.training.engine"]}
    assert trainers <= engine and "generate_synthetic" not in engine
    assert "generate_synthetic" not in {job.split("[")[0]
                                        for job in table["dermflow.gan.training"]}
    assert "generate_synthetic" in {job.split("[")[0] for job in table["dermflow.gan.networks"]}
    assert not {job for job in table["dermflow.training.loop"]
                if job.startswith(("train_gan", "generate_synthetic", "check_synthetic"))}


def test_rules_hash_what_their_scripts_import():
    """Every rule with a code param hashes its own table entry, which holds every dermflow
    module its script imports."""
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        for block in re.split(r"\n\s*rule ", smk.read_text())[1:]:
            rule = block.split(":")[0]
            code = re.search(r'code=(?:lambda wc: )?stage_hash\("(\w+)"', block)
            if code is None:
                continue
            assert code.group(1) == rule
            script = REPO / "workflow/scripts" / re.search(r"scripts/(\w+\.py)", block).group(1)
            imports = {node.module for node in ast.walk(ast.parse(script.read_text()))
                       if isinstance(node, ast.ImportFrom) and node.module.startswith("dermflow")}
            assert imports <= set(reruns.STAGES[rule]), rule


def test_closure_follows_imports():
    closure = codehash.module_closure("dermflow.data.images")
    assert closure == ["dermflow", "dermflow.atomic", "dermflow.data", "dermflow.data.images",
                       "dermflow.errors"]


def test_editing_a_dependency_changes_the_hash(package_copy):
    images = codehash.code_hash("dermflow.data.images")
    labels = codehash.code_hash("dermflow.labels")
    edit(package_copy / "atomic.py")
    assert codehash.code_hash("dermflow.data.images") != images
    assert codehash.code_hash("dermflow.labels") == labels


def test_editing_a_model_changes_its_experiments_hash_only(package_copy):
    asff = reruns.stage_hash("train_classifier", model="asff_resnet50")
    plain = reruns.stage_hash("train_classifier", model="resnet18")
    baseline = reruns.stage_hash("train_baseline")
    edit(package_copy / "models" / "asff.py")
    assert reruns.stage_hash("train_classifier", model="asff_resnet50") != asff
    assert reruns.stage_hash("train_classifier", model="resnet18") == plain
    assert reruns.stage_hash("train_baseline") == baseline


def test_unknown_module_is_an_error():
    with pytest.raises(ModuleNotFoundError, match="dermflow.nope"):
        codehash.code_hash("dermflow.nope")


def test_a_rule_that_builds_a_model_needs_it():
    with pytest.raises(ValueError, match="model"):
        reruns.stage_modules("predict")
