"""Rules wire by name: each result path is spelled once, by the rule that writes it, and a
script reads only its own job (inputs and outputs by name, params, log, threads)."""

from __future__ import annotations

import ast
import re
from collections import Counter

from conftest import REPO

RULES = sorted((REPO / "workflow/rules").glob("*.smk"))
SCRIPTS = sorted((REPO / "workflow/scripts").glob("*.py"))
# What a script may read of its job: nothing of the config behind its params.
JOB = {"input", "output", "params", "log", "threads", "resources", "wildcards"}
# A quoted result path, or one under a stage's folder (common.smk: RUN, UP, EXP, EVAL).
RESULT_PATH = re.compile(r'f?"((?:results/|\{(?:RUN|UP|EXP|EVAL)\}/)[^"]*)"')
NOT_RESULTS = ("results/benchmarks/", "results/checkpoints/")


def test_every_result_path_is_spelled_once():
    """Later rules refer to an output as rules.<rule>.output.<name>, never by its path."""
    paths = Counter(path for smk in RULES for path in RESULT_PATH.findall(smk.read_text())
                    if not path.startswith(NOT_RESULTS))
    assert len(paths) > 40  # the pattern finds the outputs
    assert not [path for path, count in paths.items() if count > 1]


def snakemake_reads(script: ast.Module) -> set[str]:
    """Every ``snakemake.<attr>`` a script reads."""
    return {node.attr for node in ast.walk(script) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "snakemake"}


def test_scripts_read_only_their_job():
    for path in SCRIPTS:
        read = snakemake_reads(ast.parse(path.read_text()))
        assert read <= JOB, (path.name, read - JOB)


def test_scripts_read_inputs_by_name_not_by_position_or_built_key():
    """No ``input[0]`` and no ``input[f"..._{name}"]``: a rule that takes a variable set of
    files passes the mapping itself as a param."""
    inputs = {"snakemake.input", "inp"}  # "inp": the scripts' short name for their inputs
    for path in SCRIPTS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript):
                assert ast.unparse(node.value) not in inputs, (path.name, ast.unparse(node))
            if isinstance(node, ast.Call) and ast.unparse(node.func) in {
                    f"{name}.get" for name in inputs}:
                assert not isinstance(node.args[0], ast.JoinedStr), (path.name,
                                                                      ast.unparse(node))
