# Evaluation of every experiment, paired comparisons and the report; under cross-validation,
# each experiment's runs are first joined (cross_predict) and each fold summarised.

if CV:

    rule cross_predict:
        input:
            unpack(
                lambda wc: {
                    f"{key}_{f}_{s}": at(f"{EXP}/{kind}", f, experiment=wc.experiment, seed=s)
                    for f, s in runs()
                    for key, kind in RUN_FILES
                }
            ),
        output:
            predictions=f"{EVAL}/predictions.csv",
            runs=f"{EVAL}/runs.csv",
            metrics=f"{EVAL}/metrics.json",
        params:
            runs=runs(),
            code=stage_hash("cross_predict"),
        log:
            "logs/cross_predict_{experiment}.log",
        benchmark:
            "results/benchmarks/cross_predict_{experiment}.tsv"
        conda:
            ENV
        script:
            "../scripts/cross_predict.py"

    rule summarize_fold:
        input:
            unpack(
                lambda wc: {
                    f"{key}_{name}_{s}": at(
                        f"{EXP}/{kind}", fold_index(wc), experiment=name, seed=s
                    )
                    for name in EXPERIMENTS
                    for s in range(SEEDS)
                    for key, kind in RUN_FILES
                }
            ),
        output:
            summary="results/cv/fold{fold}/summary.csv",
        params:
            fold=fold_index,
            runs=[(name, s) for name in EXPERIMENTS for s in range(SEEDS)],
            code=stage_hash("summarize_fold"),
        log:
            "logs/cv/fold{fold}/summarize_fold.log",
        benchmark:
            "results/benchmarks/cv/fold{fold}/summarize_fold.tsv"
        conda:
            ENV
        script:
            "../scripts/summarize_fold.py"


rule evaluate:
    input:
        predictions=f"{EVAL}/predictions.csv",
        runs=[f"{EVAL}/runs.csv"] if CV else [],
    output:
        evaluation=f"{EVAL}/evaluation.json",
        bootstrap=f"{EVAL}/bootstrap.csv",
        roc=report(
            f"{EVAL}/roc.png",
            caption="../report/evaluate_roc.rst",
            category="6. Evaluation",
            subcategory="{experiment}",
        ),
        pr=report(
            f"{EVAL}/precision_recall.png",
            caption="../report/evaluate_pr.rst",
            category="6. Evaluation",
            subcategory="{experiment}",
        ),
        confusion=report(
            f"{EVAL}/confusion.png",
            caption="../report/evaluate_confusion.rst",
            category="6. Evaluation",
            subcategory="{experiment}",
        ),
        distributions=report(
            f"{EVAL}/bootstrap.png",
            caption="../report/evaluate_bootstrap.rst",
            category="6. Evaluation",
            subcategory="{experiment}",
        ),
    params:
        settings=config["report"],
        code=stage_hash("evaluate"),
    log:
        "logs/evaluate_{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/evaluate.py"


rule compare:
    input:
        predictions=expand(f"{EVAL}/predictions.csv", experiment=EXPERIMENTS),
        runs=expand(f"{EVAL}/runs.csv", experiment=EXPERIMENTS) if CV else [],
    output:
        table="results/report/comparisons.csv",
    params:
        names=list(EXPERIMENTS),
        declared=declared_pairs(config["experiments"], config["report"]["comparisons"]),
        settings=config["report"],
        code=stage_hash("compare"),
    log:
        "logs/compare.log",
    benchmark:
        "results/benchmarks/compare.tsv"
    conda:
        ENV
    script:
        "../scripts/compare.py"


rule report:
    input:
        unpack(report_inputs),
    output:
        table="results/report/ablation.csv",
        markdown=report(
            "results/report/ablation.md",
            caption="../report/ablation.rst",
            category="7. Report",
        ),
        leakage="results/report/leakage.json",
        rst="results/report/workflow.rst",
        tables=report(
            "results/report/tables.html",
            caption="../report/tables.rst",
            category="7. Report",
        ),
    params:
        experiments=config["experiments"],
        datasets=dataset_labels(),
        data={
            "source": DATASET["source"],
            "path": DATASET["path"],
            "image_size": config["image_size"],
            "protocol": config["protocol"],
            "folds": FOLDS,
            "generator": config["gan"]["kind"],
        },
        settings=config["report"],
        code=stage_hash("report"),
    log:
        "logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        ENV
    script:
        "../scripts/report.py"
