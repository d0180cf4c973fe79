"""Wire rule validate_dataset to dermflow.data.validate."""

from pathlib import Path

from dermflow.atomic import write_csv
from dermflow.data.validate import validate_dataset
from dermflow.stage import run_stage

with run_stage(snakemake):
    manifest, quarantine = validate_dataset(
        snakemake.input.metadata,
        [Path(p) for p in snakemake.input.images],
        on_bad_input=snakemake.params.on_bad_input,
        threads=snakemake.threads,
    )
    write_csv(manifest, snakemake.output.manifest)
    write_csv(quarantine, snakemake.output.quarantine)
