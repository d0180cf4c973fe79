# Balanced datasets, the experiments' classifiers and their predictions: one run per
# experiment, or per experiment, fold and seed under cross-validation (RUN, EXP: common.smk).


rule build_dataset:
    input:
        unpack(generator_pool),
        **image_cache(),
        split=split_of(RUN),
    output:
        table=f"{RUN}/datasets/{{balance}}/dataset.csv",
    wildcard_constraints:
        balance="|".join(["none", "oversample", *GENERATORS]),
    params:
        balance="{balance}",
        protocol=config["protocol"],
        split=config["split"],
        seed=config["seed"],
        folds=FOLDS,
        fold=fold_index,
        synthesis=lambda wc: config["synthesis"] if wc.balance == "oversample" else None,
        code=stage_hash("build_dataset"),
    log:
        f"logs/{tag(RUN, 'build_dataset_{balance}')}.log",
    benchmark:
        f"results/benchmarks/{tag(RUN, 'build_dataset_{balance}')}.tsv"
    conda:
        ENV
    script:
        "../scripts/build_dataset.py"


rule build_augmented_dataset:
    input:
        **image_cache(),
        split=split_of(RUN),
    output:
        table=f"{RUN}/datasets/augment/dataset.csv",
        images=f"{RUN}/datasets/augment/augmented.npy",
    params:
        balance="augment",
        protocol=config["protocol"],
        split=config["split"],
        seed=config["seed"],
        folds=FOLDS,
        fold=fold_index,
        synthesis=config["synthesis"],
        code=stage_hash("build_augmented_dataset"),
    log:
        f"logs/{tag(RUN, 'build_dataset_augment')}.log",
    benchmark:
        f"results/benchmarks/{tag(RUN, 'build_dataset_augment')}.tsv"
    conda:
        ENV
    script:
        "../scripts/build_dataset.py"


rule train_classifier:
    input:
        unpack(experiment_data),
    output:
        model=f"{EXP}/model.pt",
        history=f"{EXP}/history.csv",
        curve=report(
            f"{EXP}/training_curve.png",
            caption="../report/classifier_curve.rst",
            category="5. Classifiers",
            subcategory="{experiment}",
        ),
        metrics=f"{EXP}/metrics.json",
    params:
        experiment=lambda wc: EXPERIMENTS[wc.experiment],
        settings=lambda wc: experiment_settings(wc.experiment),
        protocol=config["protocol"],
        seed=run_seed,
        precision=config["precision"],
        weights_dir=config["weights_dir"],
        preparation=recipe(config),
        checkpoints=f"results/checkpoints/{run_tag('train_classifier')}",
        code=lambda wc: stage_hash("train_classifier", model=EXPERIMENTS[wc.experiment]["model"]),
    threads: 4
    resources:
        gpu=lambda wc: experiment_settings(wc.experiment)["gpus"],
    log:
        f"logs/{run_tag('train_classifier')}.log",
    benchmark:
        f"results/benchmarks/{run_tag('train_classifier')}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_classifier.py"


rule predict:
    input:
        unpack(experiment_data),
        unpack(lambda wc: external_cache()),
        model=rules.train_classifier.output.model,
    output:
        predictions=f"{EXP}/predictions.csv",
        saliency=report(
            f"{EXP}/saliency.png",
            caption="../report/classifier_saliency.rst",
            category="5. Classifiers",
            subcategory="{experiment}",
        ),
    params:
        settings=lambda wc: experiment_settings(wc.experiment),
        precision=config["precision"],
        code=lambda wc: stage_hash("predict", model=EXPERIMENTS[wc.experiment]["model"]),
    threads: 4
    resources:
        gpu=1,
    log:
        f"logs/{run_tag('predict')}.log",
    benchmark:
        f"results/benchmarks/{run_tag('predict')}.tsv"
    conda:
        ENV
    script:
        "../scripts/predict.py"
