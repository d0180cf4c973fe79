# Evaluation of every experiment, paired comparisons and the report.


rule evaluate:
    input:
        predictions="results/experiments/{experiment}/predictions.csv",
    output:
        evaluation="results/experiments/{experiment}/evaluation.json",
        bootstrap="results/experiments/{experiment}/bootstrap.csv",
        roc=report(
            "results/experiments/{experiment}/roc.png",
            caption="../report/evaluate_roc.rst",
            category="6. Evaluation",
            subcategory="{experiment}",
        ),
        pr=report(
            "results/experiments/{experiment}/precision_recall.png",
            caption="../report/evaluate_pr.rst",
            category="6. Evaluation",
            subcategory="{experiment}",
        ),
        confusion=report(
            "results/experiments/{experiment}/confusion.png",
            caption="../report/evaluate_confusion.rst",
            category="6. Evaluation",
            subcategory="{experiment}",
        ),
        distributions=report(
            "results/experiments/{experiment}/bootstrap.png",
            caption="../report/evaluate_bootstrap.rst",
            category="6. Evaluation",
            subcategory="{experiment}",
        ),
    params:
        settings=config["report"],
        code=code_hash("dermflow.evaluation.evaluate"),
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
        predictions=expand(
            "results/experiments/{experiment}/predictions.csv", experiment=EXPERIMENTS
        ),
    output:
        table="results/report/comparisons.csv",
    params:
        names=list(EXPERIMENTS),
        declared=declared_pairs(config["experiments"], config["report"]["comparisons"]),
        settings=config["report"],
        code=code_hash("dermflow.evaluation.compare"),
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
    params:
        experiments=config["experiments"],
        protocol=config["protocol"],
        settings=config["report"],
        code=code_hash("dermflow.evaluation.report"),
    log:
        "logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        ENV
    script:
        "../scripts/report.py"
