"""Wire rule train_baseline to dermflow.training.baseline."""

from dermflow.gpustage import gpu_stage
from dermflow.training.baseline import train_baseline

with gpu_stage(snakemake) as (log, device):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    train_baseline(
        inp.cache,
        inp.index,
        inp.split,
        protocol=par.protocol,
        settings=par.settings,
        device=device,
        seed=par.seed,
        weights_dir=par.weights_dir,
        precision=par.precision,
        checkpoint_dir=par.checkpoints,
        out_model=out.model,
        out_history=out.history,
        out_curve=out.curve,
        out_metrics=out.metrics,
    )
