"""Wire rule download_manifest to dermflow.data.download.fetch_manifest."""

from dermflow.data.download import fetch_manifest
from dermflow.stage import run_stage

with run_stage(snakemake):
    fetch_manifest(
        snakemake.output.manifest,
        base_url=snakemake.params.url,
        doi=snakemake.params.doi,
        version=snakemake.params.version,
    )
