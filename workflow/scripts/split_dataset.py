"""Wire rule split_dataset to dermflow.data.split."""

from dermflow.data.split import split_dataset
from dermflow.stage import run_stage

with run_stage(snakemake):
    split_dataset(
        snakemake.input.manifest,
        snakemake.params.protocol,
        snakemake.params.split,
        out_split=snakemake.output.split,
        out_summary=snakemake.output.summary,
    )
