"""Wire rule train_classifier to dermflow.experiments.classifier."""

from dermflow.experiments.classifier import train_classifier
from dermflow.gpustage import gpu_stage

with gpu_stage(snakemake) as (log, device):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    train_classifier(
        device=device,
        gpus=par.settings["gpus"],
        log_file=snakemake.log[0],
        dataset_csv=inp.dataset,
        cache_npy=inp.cache,
        extra_npy=inp.get("extra"),
        name=par.experiment["name"],
        experiment=par.experiment,
        settings=par.settings,
        seed=par.seed,
        weights_dir=par.weights_dir,
        precision=par.precision,
        protocol=par.protocol,
        preparation=par.preparation,
        checkpoint_dir=par.checkpoints,
        out_model=out.model,
        out_history=out.history,
        out_curve=out.curve,
        out_metrics=out.metrics,
    )
