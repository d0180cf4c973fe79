"""Wire rule cross_predict to dermflow.evaluation.crossval."""

from dermflow.evaluation.crossval import cross_predict
from dermflow.stage import run_stage

with run_stage(snakemake):
    out = snakemake.output
    cross_predict(
        snakemake.params.runs,
        out_predictions=out.predictions,
        out_runs=out.runs,
        out_metrics=out.metrics,
    )
