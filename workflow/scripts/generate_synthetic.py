"""Wire rule generate_synthetic to dermflow.gan.synthesis."""

from dermflow.gan.synthesis import generate_synthetic
from dermflow.gpustage import gpu_stage

with gpu_stage(snakemake) as (log, device):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    generate_synthetic(
        inp.generator,
        inp.cache,
        inp.index,
        inp.split,
        inp.get("attention"),
        protocol=par.protocol,
        settings=par.settings,
        device=device,
        seed=par.seed,
        precision=par.precision,
        out_npy=out.images,
        out_manifest=out.manifest,
        out_figure=out.figure,
    )
