"""Wire rule summarize_fold to dermflow.evaluation.crossval."""

from dermflow.evaluation.crossval import summarize_fold
from dermflow.stage import run_stage

with run_stage(snakemake):
    inp, par = snakemake.input, snakemake.params
    summarize_fold(
        par.fold,
        {
            (name, s): (inp[f"predictions_{name}_{s}"], inp[f"metrics_{name}_{s}"])
            for name, s in par.runs
        },
        snakemake.output.summary,
    )
