"""Wire rule report to dermflow.evaluation.report."""

from dermflow.evaluation.report import write_report
from dermflow.stage import run_stage

with run_stage(snakemake):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    write_report(
        par.experiments,
        par.evaluations,
        par.metrics,
        par.datasets,
        inp.cache,
        inp.comparisons,
        inp.quarantine,
        inp.get("external_quarantine"),
        list(inp.get("quality", [])),
        data=par.data,
        resamples=par.settings["bootstrap"],
        max_bits=par.settings["near_duplicate_bits"],
        max_mae=par.settings["near_duplicate_mae"],
        out_csv=out.table,
        out_markdown=out.markdown,
        out_leakage=out.leakage,
        out_rst=out.rst,
        out_tables=out.tables,
    )
