"""Wire rule cross_predict to dermflow.evaluation.crossval."""

from dermflow.evaluation.crossval import cross_predict
from dermflow.stage import run_stage

with run_stage(snakemake):
    inp, out = snakemake.input, snakemake.output
    cross_predict(
        {
            (f, s): (inp[f"predictions_{f}_{s}"], inp[f"metrics_{f}_{s}"])
            for f, s in snakemake.params.runs
        },
        out_predictions=out.predictions,
        out_runs=out.runs,
        out_metrics=out.metrics,
    )
