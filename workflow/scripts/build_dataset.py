"""Wire rules build_dataset and build_augmented_dataset to dermflow.experiments.datasets."""

from dermflow.experiments.datasets import build_dataset
from dermflow.stage import run_stage

with run_stage(snakemake):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    build_dataset(
        par.balance,
        inp.cache,
        inp.index,
        inp.split,
        protocol=par.protocol,
        split_settings=par.split,
        seed=par.seed,
        folds=par.folds,
        fold=par.fold,
        out_csv=out.table,
        synthetic_split=inp.get("synthetic_split"),
        synthetic_manifest=inp.get("synthetic_manifest"),
        synthesis=par.synthesis,
        out_npy=out.get("images"),
    )
