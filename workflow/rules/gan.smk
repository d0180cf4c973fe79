# The generator (gan.kind: the attention-conditioned C'GAN or paper 003's DCGAN): train,
# generate, check, and the pooled split; per fold under cross-validation (UP, RUN: common.smk).


rule train_gan:
    input:
        **image_cache(),
        split=split_of(UP),
        **gan_attention(),
    output:
        generator=f"{UP}/gan/generator.pt",
        history=f"{UP}/gan/history.csv",
        curve=report(
            f"{UP}/gan/losses.png",
            caption="../report/gan_losses.rst",
            category="4. Synthetic images",
        ),
    params:
        settings=config["gan"],
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        checkpoints=f"results/checkpoints/{tag(UP, 'train_gan')}",
        code=stage_hash("train_gan", generator=config["gan"]["kind"]),
    threads: 4
    resources:
        gpu=1,
    log:
        f"logs/{tag(UP, 'train_gan')}.log",
    benchmark:
        f"results/benchmarks/{tag(UP, 'train_gan')}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_gan.py"


rule generate_synthetic:
    input:
        generator=rules.train_gan.output.generator,
        **image_cache(),
        split=split_of(UP),
        **gan_attention(),
    output:
        images=f"{UP}/synthetic/synthetic.npy",
        manifest=f"{UP}/synthetic/manifest.csv",
        figure=report(
            f"{UP}/synthetic/examples.png",
            caption="../report/synthetic_examples.rst",
            category="4. Synthetic images",
        ),
    params:
        settings=config["synthesis"],
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        code=stage_hash("generate_synthetic", generator=config["gan"]["kind"]),
    threads: 4
    resources:
        gpu=1,
    log:
        f"logs/{tag(UP, 'generate_synthetic')}.log",
    benchmark:
        f"results/benchmarks/{tag(UP, 'generate_synthetic')}.tsv"
    conda:
        ENV
    script:
        "../scripts/generate_synthetic.py"


rule check_synthetic:
    input:
        model=rules.train_baseline.output.model,
        **image_cache(),
        split=split_of(UP),
        images=rules.generate_synthetic.output.images,
        manifest=rules.generate_synthetic.output.manifest,
    output:
        quality=f"{UP}/synthetic/quality.json",
        table=report(
            f"{UP}/synthetic/quality.md",
            caption="../report/synthetic_quality.rst",
            category="4. Synthetic images",
        ),
        nearest=f"{UP}/synthetic/nearest.csv",
    params:
        settings=config["quality"],
        protocol=config["protocol"],
        seed=config["seed"],
        weights_dir=config["weights_dir"],
        code=stage_hash("check_synthetic"),
    threads: 4
    resources:
        gpu=1,
    log:
        f"logs/{tag(UP, 'check_synthetic')}.log",
    benchmark:
        f"results/benchmarks/{tag(UP, 'check_synthetic')}.tsv"
    conda:
        ENV
    script:
        "../scripts/check_synthetic.py"


rule split_pool:
    input:
        split=split_of(RUN),
        manifest=rules.generate_synthetic.output.manifest,
        quality=rules.check_synthetic.output.quality,
    output:
        split=f"{RUN}/synthetic/split.csv",
    params:
        protocol=config["protocol"],
        split=config["split"],
        folds=FOLDS,
        fold=fold_index,
        code=stage_hash("split_pool"),
    log:
        f"logs/{tag(RUN, 'split_pool')}.log",
    benchmark:
        f"results/benchmarks/{tag(RUN, 'split_pool')}.tsv"
    conda:
        ENV
    script:
        "../scripts/split_pool.py"
