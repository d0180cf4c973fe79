# The baseline ResNet50V2 and its SmoothGrad attention maps (GPU stages).


rule train_baseline:
    input:
        cache=CACHE,
        index=CACHE_INDEX,
        split="results/split/split.csv",
    output:
        model="results/baseline/model.pt",
        history="results/baseline/history.csv",
        curve=report(
            "results/baseline/training_curve.png",
            caption="../report/baseline_curve.rst",
            category="3. Baseline",
        ),
        metrics="results/baseline/metrics.json",
    params:
        settings=config["baseline"],
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        weights_dir=config["weights_dir"],
        checkpoints="results/checkpoints/train_baseline",
        code=code_hash("dermflow.training.baseline"),
    threads: 4
    resources:
        gpu=1,
    log:
        "logs/train_baseline.log",
    benchmark:
        "results/benchmarks/train_baseline.tsv"
    conda:
        ENV
    script:
        "../scripts/train_baseline.py"


rule extract_attention:
    input:
        model="results/baseline/model.pt",
        cache=CACHE,
        index=CACHE_INDEX,
        split="results/split/split.csv",
    output:
        attention="results/attention/attention.npy",
        index="results/attention/index.csv",
        figure=report(
            "results/attention/attention_overlays.png",
            caption="../report/attention_overlays.rst",
            category="3. Baseline",
        ),
    params:
        settings=config["attention"],
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        code=code_hash("dermflow.training.attention"),
    threads: 4
    resources:
        gpu=1,
    log:
        "logs/extract_attention.log",
    benchmark:
        "results/benchmarks/extract_attention.tsv"
    conda:
        ENV
    script:
        "../scripts/extract_attention.py"
