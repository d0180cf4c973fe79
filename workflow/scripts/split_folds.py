"""Wire rule split_folds to dermflow.data.split."""

from dermflow.data.split import split_folds
from dermflow.stage import run_stage

with run_stage(snakemake):
    split_folds(
        snakemake.input.manifest,
        snakemake.params.protocol,
        snakemake.params.split,
        snakemake.params.folds,
        out_folds=snakemake.output.folds,
        out_summary=snakemake.output.summary,
    )
