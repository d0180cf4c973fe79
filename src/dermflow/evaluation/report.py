"""report: the headline, the declared and exploratory comparisons, the ablation table in the
paper's Table 5 layout and the leakage audit (dermflow.evaluation.leakage) in one Markdown
page, and the HTML report's opening page (dermflow.evaluation.headline)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermflow.atomic import atomic_path, write_csv, write_json
from dermflow.evaluation.headline import (
    data_line,
    headline_rows,
    quarantine_summary,
    title,
    workflow_rst,
)
from dermflow.evaluation.leakage import leakage_audit
from dermflow.evaluation.significance import format_p
from dermflow.evaluation.tables import leakage_rows, pair_rows, tables_html

log = logging.getLogger(__name__)

# The source paper's Table 5: (balance, model) → accuracy, SE, macro and weighted P/R/F1.
PAPER_TABLE5 = {
    ("cgan", "resnet50v2_mobilenetv2"): ("(i)", 0.59, 0.0010, (0.60, 0.53, 0.50),
                                         (0.66, 0.59, 0.57)),
    ("cgan", "resnet50v2_efficientnetv2"): ("(ii)", 0.88, 0.0008, (0.89, 0.86, 0.87),
                                            (0.89, 0.88, 0.88)),
    ("cgan", "resnet50v2_mobilenetv2_efficientnetv2"): ("(iii)", 0.89, 0.0008,
                                                        (0.90, 0.89, 0.89), (0.90, 0.89, 0.89)),
    ("augment", "resnet50v2_deit"): ("(iv)", 0.85, 0.0009, (0.86, 0.83, 0.85),
                                     (0.85, 0.85, 0.85)),
    ("cgan", "resnet50v2_deit"): ("(v)", 0.92, 0.0003, (0.93, 0.93, 0.93), (0.92, 0.92, 0.92)),
}


def ablation_table(experiments: list[dict[str, Any]], evaluations: dict[str, dict],
                   metrics: dict[str, dict]) -> pd.DataFrame:
    """One block per experiment: per-class P/R/F1, macro and weighted averages, accuracy, SE,
    training time; the paper's figures beside where it reported the same configuration."""
    rows = []
    for exp in experiments:
        name = exp["name"]
        ev, trained = evaluations[name], metrics[name]
        task = exp.get("task", "multiclass")
        paper = PAPER_TABLE5.get((exp["balance"], exp["model"])) if task == "multiclass" \
            else None
        common = {"experiment": name, "balance": exp["balance"], "model": exp["model"],
                  "task": task,
                  "accuracy": ev["overall"]["accuracy"],
                  "se": ev["bootstrap"]["overall"]["accuracy"]["se"],
                  "training_minutes": trained["training_seconds"] / 60,
                  "paper_row": paper[0] if paper else ""}
        for dx, c in ev["per_class"].items():
            rows.append({**common, "class": dx, "precision": c["precision"],
                         "recall": c["recall"], "f1": c["f1"]})
        o = ev["overall"]
        for kind, idx in (("macro", 3), ("weighted", 4)):
            ref = paper[idx] if paper else (None, None, None)
            rows.append({**common, "class": f"{kind} average",
                         "precision": o[f"{kind}_precision"], "recall": o[f"{kind}_recall"],
                         "f1": o[f"{kind}_f1"], "paper_precision": ref[0],
                         "paper_recall": ref[1], "paper_f1": ref[2],
                         "paper_accuracy": paper[1] if paper else None,
                         "paper_se": paper[2] if paper else None})
    return pd.DataFrame(rows)


def ablation_markdown(table: pd.DataFrame) -> str:
    """Table 5's layout: metrics per class, averages, then accuracy/SE/time per experiment."""
    def f(v: Any) -> str:
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.2f}"

    lines = ["| experiment | class | precision | recall | F1 | accuracy | SE | training "
             "| paper P / R / F1 | paper accuracy / SE |", "|---" * 10 + "|"]
    for name, block in table.groupby("experiment", sort=False):
        first = block.iloc[0]
        for i, (_, r) in enumerate(block.iterrows()):
            task = "" if first["task"] == "multiclass" else f"({first['task']})"
            head = " ".join(p for p in (name, first["paper_row"], task) if p) if i == 0 else ""
            acc = (f"{r['accuracy']:.4f} | {r['se']:.4f} | {r['training_minutes']:.1f} min"
                   if i == 0 else " | | ")
            paper = (f"{f(r.get('paper_precision'))} / {f(r.get('paper_recall'))} / "
                     f"{f(r.get('paper_f1'))}" if "average" in r["class"] else "")
            paper_acc = (f"{f(r.get('paper_accuracy'))} / {r.get('paper_se')}"
                         if r["class"] == "macro average" and pd.notna(r.get("paper_se"))
                         else "")
            lines.append(f"| {head} | {r['class']} | {r['precision']:.2f} | {r['recall']:.2f} "
                         f"| {r['f1']:.2f} | {acc} | {paper} | {paper_acc} |")
    return "\n".join(lines) + "\n"


def _markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    return ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|",
            *("| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows)]


def comparison_lines(comparisons: pd.DataFrame, scope: str) -> list[str]:
    """Markdown rows of one scope of comparisons.csv."""
    lines = ["| set | method | a | b | metric | a - b | 95% CI | p |" + (
        " Holm p |" if scope == "declared" else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if scope == "declared" else "")]
    for _, r in comparisons[comparisons["scope"] == scope].iterrows():
        start = f"| {r['split']} | {r['method']} | {r['a']} | {r['b']} | {r['metric']} |"
        if isinstance(r["note"], str) and r["note"]:
            lines.append(f"{start} {r['note']} | | |" + (" |" if scope == "declared" else ""))
            continue
        holm_p = f" {format_p(r['p_holm'])} |" if scope == "declared" else ""
        lines.append(f"{start} {r['difference']:+.4f} | [{r['ci_low']:+.4f}, "
                     f"{r['ci_high']:+.4f}] | {format_p(r['p_value'])} |{holm_p}")
    return lines


def write_report(experiments: list[dict[str, Any]], evaluations: dict[str, str],
                 metrics: dict[str, str], datasets: dict[str, tuple[str, str | None]],
                 cache_npy: str, comparisons_csv: str, quarantine_csv: str,
                 external_quarantine_csv: str | None, quality_jsons: list[str], *,
                 data: dict[str, Any], resamples: int,
                 max_bits: int, max_mae: float, out_csv: str, out_markdown: str,
                 out_leakage: str, out_rst: str, out_tables: str) -> None:
    """The ablation table (CSV and Markdown, with comparisons and audit), leakage.json, the
    report's opening page (dermflow.evaluation.headline) and its tables page
    (dermflow.evaluation.tables). ``data``: the dataset's source and path, image size,
    protocol and folds, which every page names. ``external_quarantine_csv``: the external
    test set's quarantine, None when the workflow has no external set. ``quality_jsons``:
    the generator's quality checks, one per fold that trains one (none without one)."""
    protocol = data["protocol"]
    ev = {k: json.loads(Path(v).read_text()) for k, v in evaluations.items()}
    tr = {k: json.loads(Path(v).read_text()) for k, v in metrics.items()}
    table = ablation_table(experiments, ev, tr)
    write_csv(table, out_csv)
    audit = {balance: leakage_audit(csv, cache_npy, extra, max_bits, max_mae)
             for balance, (csv, extra) in datasets.items()}
    write_json({"protocol": protocol, "datasets": audit}, out_leakage)
    comparisons = pd.read_csv(comparisons_csv)
    quarantine = quarantine_summary(
        {label: (path, pd.read_csv(path)) for label, path in
         (("dataset", quarantine_csv), ("external test set", external_quarantine_csv))
         if path is not None})
    unit = f"lesion-cluster bootstrap, B = {resamples}"
    lines = [f"# {title(data, experiments)}", "", f"Data: {data_line(data, ev)}.", "",
             f"Headline metrics with 95% intervals ({unit}):", "",
             *_markdown_table(headline_rows(experiments, ev)), "",
             f"## Declared comparisons ({unit}, paired; p Holm-adjusted across all of them)",
             "", *comparison_lines(comparisons, "declared"), "",
             "## Ablation (Table 5 layout)", "",
             f"Test-split metrics; SE is the standard error of accuracy ({unit}). Paper "
             "figures are the source paper's Table 5 for the same configuration, measured "
             "with its own (image-level) split.", "", ablation_markdown(table),
             f"## All pairs (exploratory: {unit}, paired, p unadjusted)", "",
             *comparison_lines(comparisons, "exploratory")]
    rule = next(iter(audit.values()))["near_duplicate_rule"]
    lines += ["", "## Leakage audit", "", f"Near duplicates: {rule}.", "",
              *_markdown_table(leakage_rows(audit).to_dict("records"))]
    pairs = pair_rows(audit)
    if len(pairs):
        lines += ["", f"Near-duplicate pairs ({len(pairs)}; every pair in leakage.json):", "",
                  *_markdown_table(pairs.head(20).to_dict("records"))]
    lines += ["", f"Quarantined by validation: {quarantine}.", ""]
    with atomic_path(out_markdown) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(out_tables) as tmp:
        tmp.write_text(tables_html(experiments, ev, tr, comparisons, audit, data=data,
                                   quarantine=quarantine, resamples=resamples, rule=rule))
    with atomic_path(out_rst) as tmp:
        tmp.write_text(workflow_rst(
            experiments, ev, comparisons, audit, data=data, quarantine=quarantine,
            qualities=[json.loads(Path(q).read_text()) for q in quality_jsons],
            steps={name: m.get("optimizer_steps") for name, m in tr.items()},
            protocol=protocol))
    log.info("report: %d experiments, leakage %s, quarantined %s", len(experiments),
             {k: v["lesions_in_several_splits"] for k, v in audit.items()}, quarantine)
