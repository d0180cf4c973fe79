"""Wire rule validate_dataset to dermflow.data.validate."""

from pathlib import Path

from dermflow.atomic import write_csv
from dermflow.data.validate import BadInputError, validate_dataset
from dermflow.stage import run_stage

# Snakemake deletes a failed job's outputs; when validation stops, its rows go here.
rejected = Path(snakemake.log[0]).with_suffix(".quarantine.csv")
with run_stage(snakemake) as log:
    try:
        manifest, quarantine = validate_dataset(
            snakemake.input.metadata,
            [Path(p) for p in snakemake.input.images],
            on_bad_input=snakemake.params.on_bad_input,
            min_side=snakemake.params.min_side,
            threads=snakemake.threads,
        )
    except BadInputError as err:
        write_csv(err.quarantine, rejected)
        log.error("every row set aside, with its reason: %s", rejected)
        raise
    rejected.unlink(missing_ok=True)  # from an earlier failed run
    write_csv(manifest, snakemake.output.manifest)
    write_csv(quarantine, snakemake.output.quarantine)
