"""Wire rule fold_split to dermflow.data.split."""

from dermflow.data.split import fold_split
from dermflow.stage import run_stage

with run_stage(snakemake):
    fold_split(snakemake.input.folds, snakemake.params.fold, out_split=snakemake.output.split)
