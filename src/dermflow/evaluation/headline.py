"""The answer first: the page the HTML report opens on (Snakemake's global ``report:`` text).

Snakemake's report shows this page in a narrow column centred vertically in a
window-high box, so anything taller than the window is cut off above the top, where no
scrollbar reaches (workflow/report/style.css, which the default profile gives every
report, pins it to the top instead). The page holds only the answer, so that it fits the
first screen, one short line a question
(what data, which experiment is best, the verdict of each declared comparison, leakage,
quarantine), and links to the tables page (dermflow.evaluation.tables), which holds
every number with its interval.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from dermflow.data.validate import problem_counts
from dermflow.evaluation.compare import TOO_FEW
from dermflow.evaluation.metrics import HEADLINE, METRICS
from dermflow.evaluation.significance import format_p

ALPHA = 0.05
TABLES = "tables.html"  # the tables page's file name: a link target in Snakemake's report
SOURCES = {"demo": "generated demo images (not real lesions)",
           "download": "HAM10000 (Harvard Dataverse)", "local": "HAM10000 from {path}"}
# Which set decides a pair's headline number: the one a reader would quote first.
SET_ORDER = ("oof", "test", "external", "cv runs")
SET_NAMES = {"oof": "out-of-fold", "test": "test", "external": "external",
             "cv runs": "CV runs"}


def interval(entry: dict[str, Any], metric: str) -> str:
    """'0.812 (0.771-0.850)': the point estimate and its 95% bootstrap interval, marked
    where a class of the set has too few lesions for it (dermflow.evaluation.bootstrap)."""
    value = entry["overall"].get(metric)
    ci = entry["bootstrap"]["overall"].get(metric)
    if value is None:
        return "–"
    if ci is None or ci.get("ci_low") is None:
        return f"{value:.3f}"
    rough = ", too few lesions" if ci.get("too_few_lesions") else ""
    return f"{value:.3f} ({ci['ci_low']:.3f}-{ci['ci_high']:.3f}{rough})"


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
                row[f"{split} {METRICS[metric].label}"] = (interval(entry, metric)
                                                           if entry else "–")
        if cv:
            runs = ev.get("cv", {})
            row["CV runs balanced accuracy (mean ± SD)"] = (
                f"{runs['mean']['balanced_accuracy']:.3f} ± {runs['sd']['balanced_accuracy']:.3f}"
                if "mean" in runs else "–")
            row["balanced accuracy gap (CV → test / test → external)"] = _gap(ev)
        rows.append(row)
    return rows


def data_line(data: dict[str, Any], evaluations: dict[str, dict]) -> str:
    """What the results are about: the data, its image size and protocol, and how many test
    images and lesions every interval rests on."""
    first = next(iter(evaluations.values()))
    source = SOURCES[data["source"]].format(path=data.get("path", ""))
    few = first["bootstrap"].get("too_few_lesions", [])
    small = (f" ({', '.join(few)} under {first['bootstrap']['min_lesions']}: class averages "
             "not judged)" if few else "")
    sets = [f"test {first['n']} images of {first['bootstrap']['clusters']} lesions{small}"]
    if "external" in first:
        sets.append(f"external {first['external']['n']} images")
    if "cv" in first:
        sets.insert(0, f"{data['folds']}-fold cross-validation")
    else:
        sets.append("one training run each")
    return (f"{source}, {data['image_size']} px, {data['protocol']}; "
            + "; ".join(sets))


def title(data: dict[str, Any], experiments: list[dict[str, Any]]) -> str:
    """The page title names the data, so a report is never mistaken for another's."""
    name = "demo data" if data["source"] == "demo" else "HAM10000"
    return f"dermflow: {name}, {data['image_size']} px"


def _number(row: pd.Series) -> str:
    return (f"{SET_NAMES.get(row['split'], row['split'])} {METRICS[row['metric']].label} "
            f"{row['difference']:+.3f} ({row['ci_low']:+.3f} to {row['ci_high']:+.3f}, "
            f"Holm p {format_p(row['p_holm'])})")


def _primary(rows: pd.DataFrame) -> pd.Series:
    """The row a reader quotes first: balanced accuracy on the first set of SET_ORDER."""
    order = {s: i for i, s in enumerate(SET_ORDER)}
    ranked = rows.assign(_set=rows["split"].map(order).fillna(len(order)),
                         _metric=rows["metric"].map({m: i for i, m in enumerate(HEADLINE)}))
    return ranked.sort_values(["_metric", "_set"], kind="stable").iloc[0]


def _reason(note: str) -> str:
    """A note as the verdict quotes it: the classes of 'too few lesions' are in the data line."""
    return TOO_FEW if note.startswith(TOO_FEW) else note


def _budget(a: str, b: str, steps: dict[str, int | None]) -> str:
    """Why a difference may be the training budget, not the data: unequal optimizer steps."""
    sa, sb = steps.get(a), steps.get(b)
    if not sa or not sb or sa == sb:
        return ""
    return f" {a} had {sa / sb:.1f}x the optimizer steps."


def verdicts(comparisons: pd.DataFrame, steps: dict[str, int | None] | None = None,
             ) -> list[str]:
    """One plain sentence per declared pair: does a difference hold, in which direction,
    on how many of its tests, with the number a reader quotes first; and, where the two
    trained for different numbers of optimizer steps (``steps``), that a difference may be
    the budget's. Rows with a note (not paired, too few lesions) were not tested: they
    never count as holding."""
    steps = steps or {}
    declared = comparisons[comparisons["scope"] == "declared"]
    out = []
    for (a, b), rows in declared.groupby(["a", "b"], sort=False):
        noted = rows["note"].fillna("").astype(str).map(_reason)
        tested = rows[noted == ""]
        if not len(tested):
            reasons = "; ".join(dict.fromkeys(noted))
            out.append(f"**{a} vs {b}:** not judged ({reasons}).")
            continue
        held = tested[tested["p_holm"] < ALPHA]
        untested = "; ".join(dict.fromkeys(noted[noted != ""]))
        skipped = (f"; {len(rows) - len(tested)} not judged: {untested}"
                   if len(tested) < len(rows) else "")
        if not len(held):
            out.append(f"**{a} vs {b}:** no difference (0 of {len(tested)} tests hold"
                       f"{skipped}); {_number(_primary(tested))}."
                       + _budget(a, b, steps))
            continue
        better = (held["difference"] > 0).sum()
        worse = len(held) - better
        if better and worse:
            verdict = f"mixed: {a} better on {better}, worse on {worse}"
        else:
            verdict = f"{a} {'better' if better else 'worse'} on {len(held)}"
        out.append(f"**{a} vs {b}:** {verdict} of {len(tested)} tests{skipped}; "
                   f"{_number(_primary(held))}." + _budget(a, b, steps))
    return out


def best_line(experiments: list[dict[str, Any]], evaluations: dict[str, dict]) -> str:
    """The best multiclass experiment: by cross-validation when there is one, else by test."""
    multi = [e for e in experiments if e.get("task", "multiclass") == "multiclass"] or \
        experiments
    if all("cv" in evaluations[e["name"]] for e in multi):
        best = max(multi, key=lambda e: evaluations[e["name"]]["cv"]["oof"]["overall"][
            "balanced_accuracy"])
        ev = evaluations[best["name"]]
        return (f"**Best** (out-of-fold balanced accuracy): **{best['name']}** "
                f"{interval(ev['cv']['oof'], 'balanced_accuracy')}; its fold ensemble on test "
                f"{interval(ev, 'balanced_accuracy')}.")
    best = max(multi, key=lambda e: evaluations[e["name"]]["overall"]["balanced_accuracy"])
    return (f"**Best** (test balanced accuracy): **{best['name']}** "
            f"{interval(evaluations[best['name']], 'balanced_accuracy')}; not a finding by "
            "itself.")


def synthetic_line(qualities: list[dict[str, Any]], generator: str) -> str:
    """What the generator's images are, from its quality check (one per fold under
    cross-validation): the gate's status and the share of near copies of a real image, so
    a reader weighs a comparison of its experiments knowing what was added."""
    statuses = ", ".join(dict.fromkeys(q["gate"]["status"] for q in qualities))
    ran = "; ".join(dict.fromkeys(f"{q['gate']['ran']} of {q['gate']['configured']}"
                                  for q in qualities))
    head = f"**Synthetic images** ({generator}): gate {statuses} ({ran} checks ran)"
    shares = [q["memorisation"]["near_copy_fraction"] for q in qualities]
    shares = [s for s in shares if s is not None]  # None: a fold made no synthetic image
    if not shares:
        return f"{head}; no synthetic image was made."
    low, high = min(shares), max(shares)
    copies = f"{100 * low:.0f}%" if round(100 * low) == round(100 * high) else \
        f"{100 * low:.0f}-{100 * high:.0f}%"
    limit = qualities[0]["memorisation"]["near_copy_fraction_max"]
    bound = f" (limit {100 * limit:.0f}%)" if limit is not None else ""
    return f"{head}; {copies} near copies of a real image{bound}."


def quarantine_summary(sets: dict[str, tuple[str, pd.DataFrame]]) -> str:
    """'dataset: 0; external test set: 1 (1 missing_file; results/external/quarantine.csv)'.

    ``sets``: label -> (its quarantine.csv, the table). Each image set is counted on its
    own, with its kinds of problem, so a reader sees what validation left out of which set
    (the external set's published zip lacks an image its ground truth lists).
    """
    parts = []
    for label, (path, table) in sets.items():
        parts.append(f"{label}: {len(table)} ({problem_counts(table)}; {path})" if len(table)
                     else f"{label}: 0")
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
        return (f"**Leakage: yes** ({protocol}): {lesions} lesions in several splits, "
                f"{synthetic} synthetic/augmented images in val/test, {duplicates} "
                f"near-duplicate pairs across train and val/test (datasets "
                f"{', '.join(sorted(leaking))}; listed in `{TABLES}`_).")
    return (f"**Leakage: none found** ({protocol}): no lesion in several splits, no "
            "synthetic/augmented image in val/test, no near-duplicate pair.")


def workflow_rst(experiments: list[dict[str, Any]], evaluations: dict[str, dict],
                 comparisons: pd.DataFrame, audit: dict[str, dict], *, data: dict[str, Any],
                 qualities: list[dict[str, Any]], steps: dict[str, int | None],
                 quarantine: str, protocol: str) -> str:
    """The report's opening page, in reStructuredText: the answer, and where the tables are.
    ``qualities``: the generator's quality checks (none when no experiment uses it);
    ``steps``: each experiment's optimizer steps."""
    heading = title(data, experiments)
    found = verdicts(comparisons, steps) or [
        "**Declared comparisons:** none could be made (see report.comparisons)."]
    lines = [heading, "=" * len(heading), "",
             f"- **Data:** {data_line(data, evaluations)}.",
             f"- {best_line(experiments, evaluations)}",
             *(f"- {line}" for line in found),
             *([f"- {synthetic_line(qualities, data['generator'])}"] if qualities else []),
             f"- {leakage_line(audit, protocol)}",
             f"- **Quarantine:** {quarantine}.", "",
             f"Every number, test and audit: `{TABLES}`_; the ablation: `ablation.md`_.", ""]
    return "\n".join(lines)
