"""Wire rule report to dermflow.evaluation.report."""

from dermflow.evaluation.report import write_report
from dermflow.stage import run_stage

with run_stage(snakemake):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    names = [e["name"] for e in par.experiments]
    balances = sorted({e["balance"] for e in par.experiments})
    write_report(
        par.experiments,
        {n: inp[f"evaluation_{n}"] for n in names},
        {n: inp[f"metrics_{n}"] for n in names},
        {b: (inp[f"dataset_{b}"], inp.get(f"extra_{b}")) for b in balances},
        inp.cache,
        inp.comparisons,
        inp.quarantine,
        protocol=par.protocol,
        resamples=par.settings["bootstrap"],
        max_bits=par.settings["near_duplicate_bits"],
        max_mae=par.settings["near_duplicate_mae"],
        out_csv=out.table,
        out_markdown=out.markdown,
        out_leakage=out.leakage,
        out_rst=out.rst,
    )
