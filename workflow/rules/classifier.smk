# Balanced datasets, the experiments' classifiers and their predictions.


rule build_dataset:
    input:
        cache=CACHE,
        index=CACHE_INDEX,
        split="results/split/split.csv",
        pool=lambda wc: (
            ["results/synthetic/split.csv", "results/synthetic/manifest.csv"]
            if wc.balance in GENERATORS
            else []
        ),
    output:
        table="results/datasets/{balance}/dataset.csv",
    wildcard_constraints:
        balance="|".join(["none", *GENERATORS]),
    params:
        protocol=config["protocol"],
        split=config["split"],
        seed=config["seed"],
        code=code_hash("dermflow.experiments.datasets"),
    log:
        "logs/build_dataset_{balance}.log",
    benchmark:
        "results/benchmarks/build_dataset_{balance}.tsv"
    conda:
        ENV
    script:
        "../scripts/build_dataset.py"


rule build_augmented_dataset:
    input:
        cache=CACHE,
        index=CACHE_INDEX,
        split="results/split/split.csv",
    output:
        table="results/datasets/augment/dataset.csv",
        images="results/datasets/augment/augmented.npy",
    params:
        protocol=config["protocol"],
        split=config["split"],
        seed=config["seed"],
        synthesis=config["synthesis"],
        code=code_hash("dermflow.experiments.datasets"),
    log:
        "logs/build_dataset_augment.log",
    benchmark:
        "results/benchmarks/build_dataset_augment.tsv"
    conda:
        ENV
    script:
        "../scripts/build_dataset.py"


rule train_classifier:
    input:
        unpack(experiment_data),
    output:
        model="results/experiments/{experiment}/model.pt",
        history="results/experiments/{experiment}/history.csv",
        curve=report(
            "results/experiments/{experiment}/training_curve.png",
            caption="../report/classifier_curve.rst",
            category="5. Classifiers",
            subcategory="{experiment}",
        ),
        metrics="results/experiments/{experiment}/metrics.json",
    params:
        experiment=lambda wc: EXPERIMENTS[wc.experiment],
        settings=lambda wc: experiment_settings(wc.experiment),
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        weights_dir=config["weights_dir"],
        checkpoints="results/checkpoints/train_classifier/{experiment}",
        code=code_hash("dermflow.experiments.classifier"),
    threads: 4
    resources:
        gpu=lambda wc: experiment_settings(wc.experiment)["gpus"],
    log:
        "logs/train_classifier_{experiment}.log",
    benchmark:
        "results/benchmarks/train_classifier_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_classifier.py"


rule predict:
    input:
        unpack(experiment_data),
        unpack(lambda wc: external_cache()),
        model="results/experiments/{experiment}/model.pt",
    output:
        predictions="results/experiments/{experiment}/predictions.csv",
        saliency=report(
            "results/experiments/{experiment}/saliency.png",
            caption="../report/classifier_saliency.rst",
            category="5. Classifiers",
            subcategory="{experiment}",
        ),
    params:
        settings=lambda wc: experiment_settings(wc.experiment),
        precision=config["precision"],
        code=code_hash("dermflow.experiments.predict"),
    threads: 4
    resources:
        gpu=1,
    log:
        "logs/predict_{experiment}.log",
    benchmark:
        "results/benchmarks/predict_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/predict.py"
