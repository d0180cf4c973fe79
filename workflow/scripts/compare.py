"""Wire rule compare to dermflow.evaluation.compare."""

from dermflow.evaluation.compare import compare_experiments
from dermflow.stage import run_stage

with run_stage(snakemake):
    settings = snakemake.params.settings
    compare_experiments(
        dict(zip(snakemake.params.names, snakemake.input.predictions, strict=True)),
        snakemake.params.declared,
        resamples=settings["bootstrap"],
        seed=settings["bootstrap_seed"],
        min_lesions=settings["min_lesions"],
        out_csv=snakemake.output.table,
        runs=dict(zip(snakemake.params.names, snakemake.input.runs, strict=True))
        if snakemake.input.runs
        else None,
    )
