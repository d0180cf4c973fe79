"""Wire rule download_file to dermflow.data.download.download_file."""

from dermflow.data.download import download_file
from dermflow.stage import run_stage

with run_stage(snakemake):
    download_file(snakemake.output.file, snakemake.input.manifest)
