"""Wire rule cache_images to dermflow.data.cache."""

import pandas as pd

from dermflow.data.cache import build_cache, cache_source
from dermflow.stage import run_stage

with run_stage(snakemake):
    hair = pd.read_csv(snakemake.input.hair[0]) if snakemake.input.hair else None
    build_cache(
        cache_source(pd.read_csv(snakemake.input.manifest), hair),
        int(snakemake.wildcards.size),
        snakemake.output.cache,
        snakemake.output.index,
        threads=snakemake.threads,
    )
