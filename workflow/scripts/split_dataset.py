"""Wire rule split_dataset to dermflow.data.split."""

import pandas as pd

from dermflow.atomic import write_csv, write_json
from dermflow.data.split import make_split, split_summary
from dermflow.stage import run_stage

with run_stage(snakemake):
    cfg = snakemake.params.split
    split = make_split(
        pd.read_csv(snakemake.input.manifest),
        snakemake.params.protocol,
        (cfg["train"], cfg["val"], cfg["test"]),
        cfg["seed"],
    )
    write_csv(split, snakemake.output.split)
    write_json(split_summary(split), snakemake.output.summary)
