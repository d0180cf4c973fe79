"""Wire rule check_synthetic to dermflow.gan.quality."""

from dermflow.gan.quality import check_synthetic
from dermflow.gpustage import gpu_stage

with gpu_stage(snakemake) as (log, device):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    check_synthetic(
        inp.model,
        inp.cache,
        inp.index,
        inp.split,
        inp.images,
        inp.manifest,
        protocol=par.protocol,
        settings=par.settings,
        weights_dir=par.weights_dir,
        device=device,
        seed=par.seed,
        out_json=out.quality,
        out_markdown=out.table,
        out_nearest=out.nearest,
    )
