"""Wire rule train_gan to dermflow.gan.training."""

from dermflow.gan.training import train_gan
from dermflow.gpustage import gpu_stage

with gpu_stage(snakemake) as (log, device):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    train_gan(
        inp.cache,
        inp.index,
        inp.split,
        inp.get("attention"),
        protocol=par.protocol,
        settings=par.settings,
        device=device,
        seed=par.seed,
        precision=par.precision,
        checkpoint_dir=par.checkpoints,
        out_generator=out.generator,
        out_history=out.history,
        out_curve=out.curve,
    )
