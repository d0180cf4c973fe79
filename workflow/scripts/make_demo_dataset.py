"""Wire rule make_demo_dataset to dermflow.data.demo."""

from pathlib import Path

from dermflow.data.demo import make_demo_dataset, make_external_test
from dermflow.stage import run_stage

with run_stage(snakemake):
    demo = snakemake.params.demo
    make_demo_dataset(
        Path(snakemake.output.metadata).parent,
        n_images=demo["n_images"],
        width=demo["width"],
        height=demo["height"],
        seed=demo["seed"],
    )
    if snakemake.params.external_test:
        make_external_test(
            Path(snakemake.output.metadata).parent,
            n_images=demo["external_images"],
            width=demo["width"],
            height=demo["height"],
            seed=demo["seed"] + 1,
        )
