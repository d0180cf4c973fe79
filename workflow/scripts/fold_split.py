"""Wire rule fold_split to dermflow.data.split."""

import pandas as pd

from dermflow.atomic import write_csv
from dermflow.data.split import fold_split
from dermflow.stage import run_stage

with run_stage(snakemake):
    split = fold_split(pd.read_csv(snakemake.input.folds), snakemake.params.fold)
    write_csv(split, snakemake.output.split)
