"""Wire rule prepare_external to dermflow.data.external."""

from pathlib import Path

from dermflow.data.external import prepare_external
from dermflow.data.hair import hair_params
from dermflow.stage import run_stage

with run_stage(snakemake):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    prepare_external(
        inp.ground_truth,
        [Path(p) for p in inp.images],
        hair=hair_params(par.hair) if par.hair["enabled"] else None,
        size=par.size,
        on_bad_input=par.on_bad_input,
        min_side=par.min_side,
        threads=snakemake.threads,
        hair_dir=out.work,
        out_npy=out.cache,
        out_index=out.index,
        out_quarantine=out.quarantine,
    )
