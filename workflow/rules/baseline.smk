# The baseline ResNet50V2 and its SmoothGrad attention maps (GPU stages), per fold under
# cross-validation with the grouped protocol (UP, common.smk).


rule train_baseline:
    input:
        **image_cache(),
        split=split_of(UP),
    output:
        model=f"{UP}/baseline/model.pt",
        history=f"{UP}/baseline/history.csv",
        curve=report(
            f"{UP}/baseline/training_curve.png",
            caption="../report/baseline_curve.rst",
            category="3. Baseline",
        ),
        metrics=f"{UP}/baseline/metrics.json",
    params:
        settings=config["baseline"],
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        weights_dir=config["weights_dir"],
        checkpoints=f"results/checkpoints/{tag(UP, 'train_baseline')}",
        code=stage_hash("train_baseline"),
    threads: 4
    resources:
        gpu=1,
    log:
        f"logs/{tag(UP, 'train_baseline')}.log",
    benchmark:
        f"results/benchmarks/{tag(UP, 'train_baseline')}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_baseline.py"


rule extract_attention:
    input:
        model=rules.train_baseline.output.model,
        **image_cache(),
        split=split_of(UP),
    output:
        attention=f"{UP}/attention/attention.npy",
        index=f"{UP}/attention/index.csv",
        figure=report(
            f"{UP}/attention/attention_overlays.png",
            caption="../report/attention_overlays.rst",
            category="3. Baseline",
        ),
    params:
        settings=config["attention"],
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        code=stage_hash("extract_attention"),
    threads: 4
    resources:
        gpu=1,
    log:
        f"logs/{tag(UP, 'extract_attention')}.log",
    benchmark:
        f"results/benchmarks/{tag(UP, 'extract_attention')}.tsv"
    conda:
        ENV
    script:
        "../scripts/extract_attention.py"
