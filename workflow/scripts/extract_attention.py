"""Wire rule extract_attention to dermflow.training.attention."""

from dermflow.gpustage import gpu_stage
from dermflow.training.attention import extract_attention

with gpu_stage(snakemake) as (log, device):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    extract_attention(
        inp.model,
        inp.cache,
        inp.index,
        inp.split,
        protocol=par.protocol,
        settings=par.settings,
        device=device,
        seed=par.seed,
        precision=par.precision,
        out_npy=out.attention,
        out_index=out.index,
        out_figure=out.figure,
    )
