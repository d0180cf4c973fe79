"""Wire rule evaluate to dermflow.evaluation.evaluate."""

from dermflow.evaluation.evaluate import evaluate_experiment
from dermflow.stage import run_stage

with run_stage(snakemake):
    out, settings = snakemake.output, snakemake.params.settings
    evaluate_experiment(
        snakemake.input.predictions,
        experiment=snakemake.wildcards.experiment,
        resamples=settings["bootstrap"],
        seed=settings["bootstrap_seed"],
        min_lesions=settings["min_lesions"],
        out_json=out.evaluation,
        out_bootstrap=out.bootstrap,
        out_roc=out.roc,
        out_pr=out.pr,
        out_confusion=out.confusion,
        out_bootstrap_png=out.distributions,
        runs_csv=next(iter(snakemake.input.runs), None),
    )
