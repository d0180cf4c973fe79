"""The workflow and the code stay lint-clean (snakemake --lint, ruff)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, copy_workflow, snakemake


def test_snakemake_lint_is_clean(tmp_path):
    proc = snakemake(copy_workflow(tmp_path / "w"), "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "src", "tests", "workflow", "benchmarks"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
