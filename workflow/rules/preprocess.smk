# Hair removal, the image cache and the train/val/test split (or the cross-validation folds).


rule remove_hair:
    input:
        manifest=rules.validate_dataset.output.manifest,
        truth=hair_truth(),
    output:
        images=directory("results/hair/images"),
        masks=directory("results/hair/masks"),
        index="results/hair/index.csv",
        figure=report(
            "results/hair/hair_removal_steps.png",
            caption="../report/hair_removal_steps.rst",
            category="2. Preprocessing",
        ),
        metrics="results/hair/metrics.json",
    params:
        hair=config["hair_removal"],
        code=stage_hash("remove_hair"),
    threads: 8
    log:
        "logs/remove_hair.log",
    benchmark:
        "results/benchmarks/remove_hair.tsv"
    conda:
        ENV
    script:
        "../scripts/remove_hair.py"


rule cache_images:
    input:
        manifest=rules.validate_dataset.output.manifest,
        hair=hair_index(),
    output:
        cache="results/cache/images_{size}.npy",
        index="results/cache/index_{size}.csv",
    params:
        code=stage_hash("cache_images"),
    threads: 8
    log:
        "logs/cache_images_{size}.log",
    benchmark:
        "results/benchmarks/cache_images_{size}.tsv"
    conda:
        ENV
    script:
        "../scripts/cache_images.py"


rule split_dataset:
    input:
        manifest=rules.validate_dataset.output.manifest,
    output:
        split="results/split/split.csv",
        summary="results/split/summary.json",
    params:
        protocol=config["protocol"],
        split=config["split"],
        code=stage_hash("split_dataset"),
    log:
        "logs/split_dataset.log",
    benchmark:
        "results/benchmarks/split_dataset.tsv"
    conda:
        ENV
    script:
        "../scripts/split_dataset.py"


rule split_folds:
    input:
        manifest=rules.validate_dataset.output.manifest,
    output:
        folds="results/cv/folds.csv",
        summary="results/cv/summary.json",
    params:
        protocol=config["protocol"],
        split=config["split"],
        folds=FOLDS,
        code=stage_hash("split_folds"),
    log:
        "logs/split_folds.log",
    benchmark:
        "results/benchmarks/split_folds.tsv"
    conda:
        ENV
    script:
        "../scripts/split_folds.py"


rule fold_split:
    input:
        folds=rules.split_folds.output.folds,
    output:
        split="results/cv/fold{fold}/split/split.csv",
    params:
        fold=fold_index,
        code=stage_hash("fold_split"),
    log:
        "logs/cv/fold{fold}/fold_split.log",
    benchmark:
        "results/benchmarks/cv/fold{fold}/fold_split.tsv"
    conda:
        ENV
    script:
        "../scripts/fold_split.py"
