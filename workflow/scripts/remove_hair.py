"""Wire rule remove_hair to dermflow.data.hair."""

from pathlib import Path

import pandas as pd

from dermflow.atomic import write_csv, write_json
from dermflow.data.hair import hair_params, remove_hair_all, summarize
from dermflow.stage import run_stage

with run_stage(snakemake):
    out = snakemake.output
    manifest = pd.read_csv(snakemake.input.manifest)
    params = hair_params(snakemake.params.hair)
    index = remove_hair_all(
        manifest, Path(out.images), Path(out.masks), params, threads=snakemake.threads
    )
    write_csv(index, out.index)
    write_json(
        summarize(
            manifest,
            index,
            params,
            snakemake.params.hair["figure_images"],
            Path(out.figure),
            truth_dir=Path(snakemake.input.truth[0]) if snakemake.input.truth else None,
        ),
        out.metrics,
    )
