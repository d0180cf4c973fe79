"""Wire rule split_pool to dermflow.data.split."""

import pandas as pd

from dermflow.atomic import write_csv
from dermflow.data.split import pool_split
from dermflow.stage import run_stage

with run_stage(snakemake):
    cfg = snakemake.params.split
    pooled = pool_split(
        pd.read_csv(snakemake.input.split),
        pd.read_csv(snakemake.input.manifest),
        snakemake.params.protocol,
        (cfg["train"], cfg["val"], cfg["test"]),
        cfg["seed"],
        folds=snakemake.params.folds,
        fold=snakemake.params.fold,
    )
    write_csv(pooled, snakemake.output.split)
