"""Wire rule compare to dermflow.evaluation.compare."""

from dermflow.evaluation.compare import compare_experiments
from dermflow.stage import run_stage

with run_stage(snakemake):
    par = snakemake.params
    compare_experiments(
        par.predictions,
        par.declared,
        resamples=par.settings["bootstrap"],
        seed=par.settings["bootstrap_seed"],
        min_lesions=par.settings["min_lesions"],
        out_csv=snakemake.output.table,
        runs=par.runs,
    )
