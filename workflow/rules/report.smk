# Evaluation of every experiment, paired comparisons and the report; under cross-validation,
# each experiment's runs are first joined (cross_predict) and each fold summarised.

if CV:

    rule cross_predict:
        input:
            runs=lambda wc: files_of(experiment_runs(wc.experiment)),
        output:
            predictions=f"{EVAL}/predictions.csv",
            runs=f"{EVAL}/runs.csv",
            metrics=f"{EVAL}/metrics.json",
        params:
            runs=lambda wc: experiment_runs(wc.experiment),
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
            runs=lambda wc: files_of(fold_runs(fold_index(wc))),
        output:
            summary="results/cv/fold{fold}/summary.csv",
        params:
            fold=fold_index,
            runs=lambda wc: fold_runs(fold_index(wc)),
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
        predictions=evaluated("predictions"),
        runs=[evaluated("runs")] if CV else [],
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
        predictions=expand(evaluated("predictions"), experiment=EXPERIMENTS),
        runs=expand(evaluated("runs"), experiment=EXPERIMENTS) if CV else [],
    output:
        table="results/report/comparisons.csv",
    params:
        predictions=per_experiment(evaluated("predictions")),
        runs=per_experiment(evaluated("runs")) if CV else None,
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
        evaluations=per_experiment(rules.evaluate.output.evaluation),
        metrics=per_experiment(evaluated("metrics")),
        datasets=report_datasets(),
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
