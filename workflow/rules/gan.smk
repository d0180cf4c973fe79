# The generator (gan.kind: the attention-conditioned C'GAN or paper 003's DCGAN): train,
# generate, check, and the pooled split.


rule train_gan:
    input:
        cache=CACHE,
        index=CACHE_INDEX,
        split="results/split/split.csv",
        **GAN_ATTENTION,
    output:
        generator="results/gan/generator.pt",
        history="results/gan/history.csv",
        curve=report(
            "results/gan/losses.png",
            caption="../report/gan_losses.rst",
            category="4. Synthetic images",
        ),
    params:
        settings=config["gan"],
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        checkpoints="results/checkpoints/train_gan",
        code=code_hash("dermflow.gan.training"),
    threads: 4
    resources:
        gpu=1,
    log:
        "logs/train_gan.log",
    benchmark:
        "results/benchmarks/train_gan.tsv"
    conda:
        ENV
    script:
        "../scripts/train_gan.py"


rule generate_synthetic:
    input:
        generator="results/gan/generator.pt",
        cache=CACHE,
        index=CACHE_INDEX,
        split="results/split/split.csv",
        **GAN_ATTENTION,
    output:
        images="results/synthetic/synthetic.npy",
        manifest="results/synthetic/manifest.csv",
        figure=report(
            "results/synthetic/examples.png",
            caption="../report/synthetic_examples.rst",
            category="4. Synthetic images",
        ),
    params:
        settings=config["synthesis"],
        protocol=config["protocol"],
        seed=config["seed"],
        precision=config["precision"],
        code=code_hash("dermflow.gan.synthesis"),
    threads: 4
    resources:
        gpu=1,
    log:
        "logs/generate_synthetic.log",
    benchmark:
        "results/benchmarks/generate_synthetic.tsv"
    conda:
        ENV
    script:
        "../scripts/generate_synthetic.py"


rule check_synthetic:
    input:
        model="results/baseline/model.pt",
        cache=CACHE,
        index=CACHE_INDEX,
        split="results/split/split.csv",
        images="results/synthetic/synthetic.npy",
        manifest="results/synthetic/manifest.csv",
    output:
        quality="results/synthetic/quality.json",
        table=report(
            "results/synthetic/quality.md",
            caption="../report/synthetic_quality.rst",
            category="4. Synthetic images",
        ),
        nearest="results/synthetic/nearest.csv",
    params:
        settings=config["quality"],
        protocol=config["protocol"],
        seed=config["seed"],
        weights_dir=config["weights_dir"],
        code=code_hash("dermflow.gan.quality"),
    threads: 4
    resources:
        gpu=1,
    log:
        "logs/check_synthetic.log",
    benchmark:
        "results/benchmarks/check_synthetic.tsv"
    conda:
        ENV
    script:
        "../scripts/check_synthetic.py"


rule split_pool:
    input:
        split="results/split/split.csv",
        manifest="results/synthetic/manifest.csv",
        quality="results/synthetic/quality.json",
    output:
        split="results/synthetic/split.csv",
    params:
        protocol=config["protocol"],
        split=config["split"],
        code=code_hash("dermflow.data.split"),
    log:
        "logs/split_pool.log",
    benchmark:
        "results/benchmarks/split_pool.tsv"
    conda:
        ENV
    script:
        "../scripts/split_pool.py"
