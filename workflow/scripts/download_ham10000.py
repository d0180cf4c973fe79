"""Wire rule download_ham10000 to dermflow.data.download."""

from pathlib import Path

from dermflow.data.download import download_ham10000
from dermflow.stage import run_stage

with run_stage(snakemake):
    download_ham10000(
        Path(snakemake.output.metadata).parent,
        base_url=snakemake.params.url,
        doi=snakemake.params.doi,
        external_test=snakemake.params.external_test,
    )
