"""Wire rule predict to dermflow.experiments.predict."""

from dermflow.experiments.predict import predict_experiment
from dermflow.gpustage import gpu_stage
from dermflow.training.batches import evaluation_batch

with gpu_stage(snakemake) as (log, device):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    predict_experiment(
        inp.model,
        inp.dataset,
        inp.cache,
        inp.get("extra"),
        device=device,
        precision=par.precision,
        per_class=par.settings["saliency_per_class"],
        batch_size=evaluation_batch(par.settings["batch_size"]),
        out_predictions=out.predictions,
        out_saliency=out.saliency,
        external=(inp.external_cache, inp.external_index)
        if hasattr(inp, "external_cache")
        else None,
    )
