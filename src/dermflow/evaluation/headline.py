"""The answer first: the page the HTML report opens on (Snakemake's global ``report:`` text).

Snakemake's report shows this page in a narrow column centred vertically in a
window-high box, so anything taller than the window is cut off above the top, where no
scrollbar reaches. The page therefore holds only the answer, one short line a question
(what data, which experiment is best, the verdict of each declared comparison, leakage,
quarantine), and links to the tables page (dermflow.evaluation.tables), which holds
every number with its interval.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from dermflow.data.validate import problem_counts
from dermflow.evaluation.metrics import HEADLINE, METRICS
from dermflow.evaluation.significance import format_p

ALPHA = 0.05
TABLES = "tables.html"  # the tables page's file name: a link target in Snakemake's report
SOURCES = {"demo": "generated demo data (dermflow's HAM10000 look-alike, not real lesions)",
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
    small = (f" ({', '.join(few)}: under {first['bootstrap']['min_lesions']} lesions each, so "
             "class averages' intervals are rough and their comparisons not judged)"
             if few else "")
    sets = [f"test split {first['n']} images of {first['bootstrap']['clusters']} lesions"
            f"{small}"]
    if "external" in first:
        sets.append(f"external test set {first['external']['n']} images")
    if "cv" in first:
        sets.insert(0, f"{data['folds']}-fold cross-validation")
    return (f"{source}, {data['image_size']} px, protocol {data['protocol']}; "
            + "; ".join(sets))


def title(data: dict[str, Any], experiments: list[dict[str, Any]]) -> str:
    """The page title names the data, so a report is never mistaken for another's."""
    name = "demo data" if data["source"] == "demo" else "HAM10000"
    return (f"dermflow on {name}: {len(experiments)} experiments, {data['image_size']} px, "
            f"protocol {data['protocol']}")


def _number(row: pd.Series) -> str:
    return (f"{METRICS[row['metric']].label} on {SET_NAMES.get(row['split'], row['split'])} "
            f"{row['difference']:+.3f} (95% CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}, "
            f"Holm p {format_p(row['p_holm'])})")


def _primary(rows: pd.DataFrame) -> pd.Series:
    """The row a reader quotes first: balanced accuracy on the first set of SET_ORDER."""
    order = {s: i for i, s in enumerate(SET_ORDER)}
    ranked = rows.assign(_set=rows["split"].map(order).fillna(len(order)),
                         _metric=rows["metric"].map({m: i for i, m in enumerate(HEADLINE)}))
    return ranked.sort_values(["_metric", "_set"], kind="stable").iloc[0]


def verdicts(comparisons: pd.DataFrame) -> list[str]:
    """One plain sentence per declared pair: does a difference hold, in which direction,
    on how many of its tests, with the number a reader quotes first. Rows with a note
    (not paired, too few lesions) were not tested: they never count as holding."""
    declared = comparisons[comparisons["scope"] == "declared"]
    out = []
    for (a, b), rows in declared.groupby(["a", "b"], sort=False):
        noted = rows["note"].fillna("").astype(str)
        tested = rows[noted == ""]
        if not len(tested):
            reasons = "; ".join(dict.fromkeys(noted))
            out.append(f"**{a} vs {b}:** not judged ({reasons}).")
            continue
        held = tested[tested["p_holm"] < ALPHA]
        untested = "; ".join(dict.fromkeys(noted[noted != ""]))
        skipped = (f"; {len(rows) - len(tested)} not tested ({untested})"
                   if len(tested) < len(rows) else "")
        if not len(held):
            out.append(f"**{a} vs {b}:** no difference holds (0 of {len(tested)} tests at "
                       f"Holm p < {ALPHA}{skipped}); {_number(_primary(tested))}.")
            continue
        better = (held["difference"] > 0).sum()
        worse = len(held) - better
        if better and worse:
            verdict = f"mixed: {a} better on {better}, worse on {worse}"
        else:
            verdict = f"{a} {'better' if better else 'worse'} than {b} on {len(held)}"
        out.append(f"**{a} vs {b}:** {verdict} of {len(tested)} tests at Holm p < {ALPHA}"
                   f"{skipped}; {_number(_primary(held))}.")
    return out


def best_line(experiments: list[dict[str, Any]], evaluations: dict[str, dict]) -> str:
    """The best multiclass experiment: by cross-validation when there is one, else by test."""
    multi = [e for e in experiments if e.get("task", "multiclass") == "multiclass"] or \
        experiments
    if all("cv" in evaluations[e["name"]] for e in multi):
        best = max(multi, key=lambda e: evaluations[e["name"]]["cv"]["oof"]["overall"][
            "balanced_accuracy"])
        ev = evaluations[best["name"]]
        return (f"**Best by cross-validation** (out-of-fold balanced accuracy): "
                f"**{best['name']}** {interval(ev['cv']['oof'], 'balanced_accuracy')}; "
                f"its fold ensemble on test {interval(ev, 'balanced_accuracy')}.")
    best = max(multi, key=lambda e: evaluations[e["name"]]["overall"]["balanced_accuracy"])
    return (f"**Best on the test split** (balanced accuracy): **{best['name']}** "
            f"{interval(evaluations[best['name']], 'balanced_accuracy')}; being best is not "
            "a finding unless a declared comparison holds.")


def synthetic_line(qualities: list[dict[str, Any]], generator: str) -> str:
    """What the generator's images are, from its quality check (one per fold under
    cross-validation): the gate's status and the share of near copies of a real image, so
    a reader weighs a comparison of its experiments knowing what was added."""
    statuses = ", ".join(dict.fromkeys(q["gate"]["status"] for q in qualities))
    ran = "; ".join(dict.fromkeys(f"{q['gate']['ran']} of {q['gate']['configured']}"
                                  for q in qualities))
    head = f"**Synthetic images** ({generator}): quality gate {statuses} ({ran} checks ran)"
    shares = [q["memorisation"]["near_copy_fraction"] for q in qualities]
    shares = [s for s in shares if s is not None]  # None: a fold made no synthetic image
    if not shares:
        return f"{head}; no synthetic image was made (quality.md)."
    low, high = min(shares), max(shares)
    copies = f"{100 * low:.0f}%" if round(100 * low) == round(100 * high) else \
        f"{100 * low:.0f}-{100 * high:.0f}%"
    limit = qualities[0]["memorisation"]["near_copy_fraction_max"]
    bound = f", the gate allows {100 * limit:.0f}%" if limit is not None else ""
    return f"{head}; {copies} are near copies of a real training image{bound} (quality.md)."


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
                f"dataset's counts; datasets {', '.join(sorted(leaking))}; pairs listed in "
                f"`{TABLES}`_).")
    return (f"**Leakage: none found** (protocol {protocol}): no lesion in several splits, "
            "no synthetic or augmented image in val/test, no near-duplicate pair across "
            "train and val/test.")


def workflow_rst(experiments: list[dict[str, Any]], evaluations: dict[str, dict],
                 comparisons: pd.DataFrame, audit: dict[str, dict], *, data: dict[str, Any],
                 qualities: list[dict[str, Any]], quarantine: str, protocol: str) -> str:
    """The report's opening page, in reStructuredText: the answer, and where the tables are.
    ``qualities``: the generator's quality checks (none when no experiment uses it)."""
    heading = title(data, experiments)
    found = verdicts(comparisons) or [
        "**Declared comparisons:** none could be made (see report.comparisons)."]
    lines = [heading, "=" * len(heading), "",
             f"- **Data:** {data_line(data, evaluations)}.",
             f"- {best_line(experiments, evaluations)}",
             *(f"- {line}" for line in found),
             *([f"- {synthetic_line(qualities, data['generator'])}"] if qualities else []),
             f"- {leakage_line(audit, protocol)}",
             f"- **Quarantine** (images set aside by validation): {quarantine}.", "",
             f"Every number with its 95% lesion-cluster interval, the declared comparisons "
             f"test by test, the leakage audit and how to read them: `{TABLES}`_ "
             "(category 7. Report); the ablation in the paper's layout: `ablation.md`_.", ""]
    return "\n".join(lines)
