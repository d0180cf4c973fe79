"""Wire rule split_folds to dermflow.data.split."""

import pandas as pd

from dermflow.atomic import write_csv, write_json
from dermflow.data.split import fold_summary, make_folds
from dermflow.stage import run_stage

with run_stage(snakemake):
    cfg, par = snakemake.params.split, snakemake.params
    folds = make_folds(
        pd.read_csv(snakemake.input.manifest),
        par.protocol,
        (cfg["train"], cfg["val"], cfg["test"]),
        cfg["seed"],
        par.folds,
    )
    write_csv(folds, snakemake.output.folds)
    write_json(fold_summary(folds), snakemake.output.summary)
