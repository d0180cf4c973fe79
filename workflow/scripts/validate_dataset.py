"""Wire rule validate_dataset to dermflow.data.validate."""

from pathlib import Path

from dermflow.data.validate import write_validation
from dermflow.stage import run_stage

with run_stage(snakemake):
    write_validation(
        snakemake.input.metadata,
        [Path(p) for p in snakemake.input.images],
        on_bad_input=snakemake.params.on_bad_input,
        min_side=snakemake.params.min_side,
        threads=snakemake.threads,
        out_manifest=snakemake.output.manifest,
        out_quarantine=snakemake.output.quarantine,
        rejected=snakemake.params.rejected,
    )
