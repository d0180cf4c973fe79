"""Wire rule summarize_fold to dermflow.evaluation.crossval."""

from dermflow.evaluation.crossval import summarize_fold
from dermflow.stage import run_stage

with run_stage(snakemake):
    summarize_fold(snakemake.params.fold, snakemake.params.runs, snakemake.output.summary)
