"""The answer first: the page the HTML report opens on (Snakemake's global ``report:`` text).

It is reStructuredText written by the report rule from the results: a few sentences
that answer the questions a reader comes with (which experiment is best, do the
declared comparisons hold, is anything leaking, was data set aside), then the
headline tables (each experiment's balanced accuracy, macro-F1 and macro ROC AUC with
their 95% lesion-cluster intervals, on CV, test and external side by side; one table a
metric, narrow enough for the page's left column), the declared comparisons
with Holm-adjusted p-values, the leakage audit, and how to read it all.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from dermflow.data.validate import problem_counts
from dermflow.evaluation.metrics import HEADLINE, METRICS
from dermflow.evaluation.significance import format_p

ALPHA = 0.05
HOW_TO_READ = (
    "How to read this: every interval is a 95% percentile interval of the lesion-cluster "
    "bootstrap ({resamples} resamples of the test set's lesions, each with all its images), "
    "so it counts lesions, not images, as independent. A declared comparison is a claim fixed "
    "before the results (report.comparisons); its Holm-adjusted p-value accounts for every "
    "declared test, and a difference whose interval includes 0 is not evidence that either "
    "experiment is better. The exploratory comparisons of every pair (comparisons.csv, "
    "ablation.md) are unadjusted leads, not findings. These intervals reflect the test set's "
    "sampling only, not training randomness (seeds, splits). Under protocol paper, the "
    "leakage audit counts what val and test share with training: its test scores are "
    "inflated and are reported to measure that inflation, not as results.")


def _interval(entry: dict[str, Any], metric: str) -> str:
    value = entry["overall"].get(metric)
    ci = entry["bootstrap"]["overall"].get(metric)
    if value is None:
        return "–"
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({ci['ci_low']:.3f}-{ci['ci_high']:.3f})"


def _gap(evaluation: dict[str, Any]) -> str:
    """Balanced accuracy from cross-validation to test to external, as differences."""
    steps = [evaluation.get("cv", {}).get("oof"), evaluation, evaluation.get("external")]
    values = [s["overall"]["balanced_accuracy"] if s else None for s in steps]
    shown = [f"{b - a:+.3f}" for a, b in zip(values, values[1:], strict=False)
             if a is not None and b is not None]
    return " / ".join(shown) if shown else "–"


def headline_rows(experiments: list[dict[str, Any]], evaluations: dict[str, dict],
                  ) -> list[dict[str, str]]:
    """One row per experiment: its headline metrics with intervals, cross-validation (its
    out-of-fold predictions, and the runs' mean ± SD) when there is one, then test and
    external, and the balanced-accuracy gap from one to the next."""
    rows = []
    cv = any("cv" in evaluations[e["name"]] for e in experiments)
    for e in experiments:
        ev = evaluations[e["name"]]
        row = {"experiment": e["name"], "model": e["model"], "balance": e["balance"],
               "task": e.get("task", "multiclass")}
        sets = [("CV", ev.get("cv", {}).get("oof"))] if cv else []
        sets += [("test", ev), ("external", ev.get("external"))]
        for split, entry in sets:
            for metric in HEADLINE:
                row[f"{split} {METRICS[metric].label}"] = (_interval(entry, metric)
                                                           if entry else "–")
        if cv:
            runs = ev.get("cv", {})
            row["CV runs balanced accuracy (mean ± SD)"] = (
                f"{runs['mean']['balanced_accuracy']:.3f} ± {runs['sd']['balanced_accuracy']:.3f}"
                if "mean" in runs else "–")
            row["balanced accuracy gap (CV → test / test → external)"] = _gap(ev)
        rows.append(row)
    return rows


def _csv_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    """An RST csv-table (quoted cells) of a list of equal-keyed rows."""
    if not rows:
        return []
    def cell(v: Any) -> str:
        return '"' + str(v).replace('"', '""') + '"'
    lines = [f".. csv-table:: {title}", "   :header: " + ", ".join(cell(k) for k in rows[0]),
             ""]
    lines += ["   " + ", ".join(cell(v) for v in row.values()) for row in rows]
    return [*lines, ""]


def _declared(comparisons: pd.DataFrame) -> list[dict[str, str]]:
    out = []
    for _, r in comparisons[comparisons["scope"] == "declared"].iterrows():
        note = r["note"] if isinstance(r["note"], str) and r["note"] else ""
        out.append({
            "a": r["a"], "b": r["b"], "set": r["split"], "method": r["method"],
            "metric": METRICS[r["metric"]].label,
            "a - b (95% CI)": note or (f"{r['difference']:+.3f} ({r['ci_low']:+.3f} to "
                                       f"{r['ci_high']:+.3f})"),
            "p": "" if note else format_p(r["p_value"]),
            "Holm p": "" if note else format_p(r["p_holm"])})
    return out


def _answer(experiments: list[dict[str, Any]], evaluations: dict[str, dict],
            comparisons: pd.DataFrame, audit: dict[str, dict], quarantine: str,
            protocol: str) -> list[str]:
    """The sentences that answer the reader's questions."""
    lines = []
    multi = [e for e in experiments if e.get("task", "multiclass") == "multiclass"] or \
        experiments
    if all("cv" in evaluations[e["name"]] for e in multi):
        best = max(multi, key=lambda e: evaluations[e["name"]]["cv"]["oof"]["overall"][
            "balanced_accuracy"])
        ev = evaluations[best["name"]]
        lines.append(f"**Best by cross-validation** (out-of-fold balanced accuracy): "
                     f"**{best['name']}** ({_interval(ev['cv']['oof'], 'balanced_accuracy')});"
                     f" its fold ensemble on the test split: "
                     f"{_interval(ev, 'balanced_accuracy')}.")
    else:
        best = max(multi, key=lambda e: evaluations[e["name"]]["overall"]["balanced_accuracy"])
        lines.append(f"**Best on the test split** by balanced accuracy: **{best['name']}** "
                     f"({_interval(evaluations[best['name']], 'balanced_accuracy')}).")
    declared = comparisons[(comparisons["scope"] == "declared") & comparisons["note"].isna()]
    if len(declared):
        held = declared[declared["p_holm"] < ALPHA]
        lines.append(f"**Declared comparisons:** {len(held)} of {len(declared)} differences "
                     f"hold at Holm-adjusted p < {ALPHA}" + (
                         ": " + "; ".join(
                             f"{r['a']} vs {r['b']} ({r['split']}, {METRICS[r['metric']].label} "
                             f"{r['difference']:+.3f})" for _, r in held.iterrows()) + "."
                         if len(held) else "."))
    else:
        lines.append("**Declared comparisons:** none could be made (see report.comparisons).")
    lines.append(leakage_line(audit, protocol))
    lines.append(f"**Quarantine** (images set aside by validation): {quarantine}.")
    return [f"- {line}" for line in lines]


def quarantine_summary(sets: dict[str, tuple[str, pd.DataFrame]]) -> str:
    """'dataset: 0 (results/data/quarantine.csv); external test set: 1 (1 missing_file; ...)'.

    ``sets``: label -> (its quarantine.csv, the table). Each image set is counted on its
    own, with its kinds of problem, so a reader sees what validation left out of which set
    (the external set's published zip lacks an image its ground truth lists).
    """
    parts = []
    for label, (path, table) in sets.items():
        kinds = f"{problem_counts(table)}; " if len(table) else ""
        parts.append(f"{label}: {len(table)} ({kinds}{path})")
    return "; ".join(parts)


def leakage_line(audit: dict[str, dict], protocol: str) -> str:
    """The headline's leakage verdict from the audit (dataset -> counts)."""
    # the datasets share their real images, so the worst dataset's counts, not their sum
    lesions = max(a["lesions_in_several_splits"] for a in audit.values())
    synthetic = max(a["non_real_in_val_test"] for a in audit.values())
    duplicates = max(a["near_duplicate_pairs_train_vs_val_test"] for a in audit.values())
    if lesions or synthetic or duplicates:
        leaking = [name for name, a in audit.items()
                   if a["lesions_in_several_splits"] or a["non_real_in_val_test"]
                   or a["near_duplicate_pairs_train_vs_val_test"]]
        return (f"**Leakage: yes** (protocol {protocol}): {lesions} lesions in several "
                f"splits, {synthetic} synthetic or augmented images in val/test, "
                f"{duplicates} near-duplicate pairs across train and val/test (the worst "
                f"dataset's counts; datasets {', '.join(sorted(leaking))}). Test scores of "
                "those datasets may be inflated (leakage audit below).")
    return (f"**Leakage: none found** (protocol {protocol}): no lesion in several splits, "
            "no synthetic or augmented image in val/test, no near-duplicate pair across "
            "train and val/test.")


def workflow_rst(experiments: list[dict[str, Any]], evaluations: dict[str, dict],
                 comparisons: pd.DataFrame, audit: dict[str, dict], *, quarantine: str,
                 protocol: str, resamples: int) -> str:
    """The report's opening page, in reStructuredText."""
    title = f"dermflow: {len(experiments)} experiments, protocol {protocol}"
    lines = [title, "=" * len(title), "",
             *_answer(experiments, evaluations, comparisons, audit, quarantine, protocol), ""]
    rows = headline_rows(experiments, evaluations)
    lines += _csv_table("Experiments", [{k: r[k] for k in ("experiment", "model", "balance",
                                                            "task")} for r in rows])
    for metric in HEADLINE:  # a narrow table per metric: the page has the DAG beside it
        label = METRICS[metric].label
        extra = ("CV runs", "balanced accuracy gap") if metric == "balanced_accuracy" else ()
        lines += _csv_table(
            f"Headline: {label}, sets side by side (95% lesion-cluster intervals, "
            f"B = {resamples})",
            [{"experiment": r["experiment"],
              **{k: v for k, v in r.items() if k.endswith(f" {label}") or k.startswith(extra)}}
             for r in rows])
    lines += _csv_table(f"Declared comparisons (paired lesion-cluster bootstrap, B = "
                        f"{resamples}; Holm-adjusted across all of them)",
                        _declared(comparisons))
    lines += _csv_table("Leakage audit per dataset", [
        {"dataset": balance, "images": a["images"],
         "lesions in several splits": a["lesions_in_several_splits"],
         "synthetic/augmented in val+test": a["non_real_in_val_test"],
         "near-duplicate pairs": a["near_duplicate_pairs_train_vs_val_test"]}
        for balance, a in audit.items()])
    lines += [HOW_TO_READ.format(resamples=resamples), ""]
    return "\n".join(lines)
