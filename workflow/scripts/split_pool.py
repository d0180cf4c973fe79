"""Wire rule split_pool to dermflow.data.split."""

from dermflow.data.split import split_pool
from dermflow.stage import run_stage

with run_stage(snakemake):
    par = snakemake.params
    split_pool(
        snakemake.input.split,
        snakemake.input.manifest,
        par.protocol,
        par.split,
        folds=par.folds,
        fold=par.fold,
        out_split=snakemake.output.split,
    )
