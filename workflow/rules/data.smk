# Acquire the raw data (download, demo, or files on disk) and validate it.

if SOURCE == "download":

    # The pinned version of the record: file ids, sizes, checksums. Refetched only when
    # the record, server (a trailing / aside) or version asked for changes (update: a failed
    # refresh keeps it); a refetch that pins the same files leaves its bytes as they were.
    rule download_manifest:
        output:
            manifest=update(f"{RAW}/{MANIFEST}"),
        params:
            url=DATASET["dataverse_url"].rstrip("/"),
            doi=DATASET["doi"],
            version=DATASET["version"],
        log:
            "logs/download_manifest.log",
        benchmark:
            "results/benchmarks/download_manifest.tsv"
        conda:
            ENV
        script:
            "../scripts/download_manifest.py"

    # One job per file, its checksum the only thing that defines it: no code hash, and an
    # output Snakemake does not delete before a rerun, so a finished, verified file is
    # kept whatever the config adds or the library changes (a rerun verifies, then keeps;
    # Snakemake copies an update() output into .snakemake/ first: README, Downloading).
    rule download_file:
        input:
            manifest=rules.download_manifest.output.manifest,
        output:
            file=update(f"{RAW}/{{name}}"),
        wildcard_constraints:
            name="|".join(re.escape(name) for name in DOWNLOADABLE),
        log:
            "logs/download_file/{name}.log",
        benchmark:
            "results/benchmarks/download_file/{name}.tsv"
        conda:
            ENV
        script:
            "../scripts/download_file.py"


if SOURCE == "demo":

    rule make_demo_dataset:
        output:
            metadata=f"{RAW}/HAM10000_metadata.csv",
            images=directory(f"{RAW}/HAM10000_images_part_1"),
            truth=directory(f"{RAW}/hair_truth"),
            external=[f"{RAW}/{name}" for name in EXTERNAL_FILES]
            if DATASET["external_test"]
            else [],
        params:
            demo=DATASET["demo"],
            external_test=DATASET["external_test"],
            code=stage_hash("make_demo_dataset"),
        log:
            "logs/make_demo_dataset.log",
        benchmark:
            "results/benchmarks/make_demo_dataset.tsv"
        conda:
            ENV
        script:
            "../scripts/make_demo_dataset.py"


rule validate_dataset:
    input:
        metadata=raw_metadata(),
        images=raw_images(),
    output:
        manifest="results/data/manifest.csv",
        quarantine=report(
            "results/data/quarantine.csv",
            caption="../report/quarantine.rst",
            category="1. Data",
        ),
    params:
        on_bad_input=config["on_bad_input"],
        min_side=config["validation"]["min_side"],
        raw=local_fingerprint(raw_metadata(), *raw_images()),
        code=stage_hash("validate_dataset"),
        # the rows set aside when the job fails (a log would outlive a later success)
        rejected="logs/validate_dataset.quarantine.csv",
    threads: 4
    log:
        "logs/validate_dataset.log",
    benchmark:
        "results/benchmarks/validate_dataset.tsv"
    conda:
        ENV
    script:
        "../scripts/validate_dataset.py"


if DATASET["external_test"]:

    rule prepare_external:
        input:
            ground_truth=external_ground_truth(),
            images=external_images(),
        output:
            cache=f"results/external/images_{config['image_size']}.npy",
            index=f"results/external/index_{config['image_size']}.csv",
            quarantine="results/external/quarantine.csv",
            work=directory("results/external/prepared"),
        params:
            hair=config["hair_removal"],
            on_bad_input=config["on_bad_input"],
            min_side=config["validation"]["min_side"],
            raw=local_fingerprint(external_ground_truth(), *external_images()),
            size=config["image_size"],
            code=stage_hash("prepare_external"),
        threads: 8
        log:
            "logs/prepare_external.log",
        benchmark:
            "results/benchmarks/prepare_external.tsv"
        conda:
            ENV
        script:
            "../scripts/prepare_external.py"
