"""Wire rules build_dataset and build_augmented_dataset to dermflow.experiments.datasets."""

from dermflow.experiments.datasets import build_dataset
from dermflow.stage import run_stage

with run_stage(snakemake):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    balance = snakemake.wildcards.get("balance", "augment")
    pool = list(getattr(inp, "pool", []))
    build_dataset(
        balance,
        inp.cache,
        inp.index,
        inp.split,
        protocol=par.protocol,
        split_settings=par.split,
        seed=par.seed,
        folds=par.folds,
        fold=par.fold,
        out_csv=out.table,
        synthetic_split=pool[0] if pool else None,
        synthetic_manifest=pool[1] if pool else None,
        synthesis=par.get("synthesis"),
        out_npy=out.get("images"),
    )
