"""The code hash follows a module's dermflow imports, so a library edit reruns its stage."""

from __future__ import annotations

import shutil

import pytest

from dermflow import codehash


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    copy = tmp_path / "dermflow"
    shutil.copytree(codehash.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "PACKAGE_DIR", copy)
    return copy


def test_closure_follows_imports():
    closure = codehash.module_closure("dermflow.data.images")
    assert closure == ["dermflow.atomic", "dermflow.data.images", "dermflow.errors"]


def test_editing_a_dependency_changes_the_hash(package_copy):
    images = codehash.code_hash("dermflow.data.images")
    labels = codehash.code_hash("dermflow.labels")
    with open(package_copy / "atomic.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert codehash.code_hash("dermflow.data.images") != images
    assert codehash.code_hash("dermflow.labels") == labels


def test_unknown_module_is_an_error():
    with pytest.raises(ModuleNotFoundError, match="dermflow.nope"):
        codehash.code_hash("dermflow.nope")


def test_modules_a_registry_names_by_path_are_covered(package_copy):
    """Builders are imported by dotted path at run time; editing one still reruns its stages."""
    closure = codehash.module_closure("dermflow.experiments.classifier")
    assert {"dermflow.models.fusion", "dermflow.models.asff"} <= set(closure)
    assert {"dermflow.gan.cgan", "dermflow.gan.dcgan"} <= set(
        codehash.module_closure("dermflow.gan.training"))
    before = codehash.code_hash("dermflow.experiments.classifier")
    with open(package_copy / "models" / "asff.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert codehash.code_hash("dermflow.experiments.classifier") != before
