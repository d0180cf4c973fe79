"""The report's tables page: every headline number with its interval, the declared
comparisons test by test, the leakage audit with its near-duplicate pairs, and how to
read them, as one self-contained HTML page that Snakemake's report shows in a frame
(the opening page, dermflow.evaluation.headline, links to it).
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from dermflow.evaluation.headline import data_line, headline_rows, title
from dermflow.evaluation.metrics import HEADLINE, METRICS
from dermflow.evaluation.significance import format_p

HOW_TO_READ = (
    "Every interval is a 95% percentile interval of the lesion-cluster bootstrap "
    "({resamples} resamples of the scored set's lesions, each with all its images: the test "
    "split's, the external set's, or under cross-validation the out-of-fold predictions'), "
    "so it counts lesions, not images, as independent. A declared comparison is a claim fixed "
    "before the results (report.comparisons); its Holm-adjusted p-value accounts for every "
    "declared test, and a difference whose interval includes 0 is not evidence that either "
    "experiment is better. A comparison with a note was not tested (the note says why) and "
    "never counts as holding. The exploratory comparisons of every pair (comparisons.csv, "
    "ablation.md) are unadjusted leads, not findings. The bootstrap intervals reflect the "
    "scored set's sampling only, not training randomness (seeds, splits); under "
    "cross-validation the corrected resampled t-test over runs counts the latter.")
PAPER = (" Under protocol paper, the leakage audit counts what val and test share with "
         "training: its test scores are inflated and are reported to measure that inflation, "
         "not as results.")
STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
p { max-width: 60em; }
"""


def how_to_read(data: dict[str, Any], resamples: int) -> str:
    """What the intervals and tests count, with the paper protocol's caveat where it applies."""
    return HOW_TO_READ.format(resamples=resamples) + (PAPER if data["protocol"] == "paper"
                                                      else "")


def declared_rows(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The declared comparisons, one row a test; a note in place of numbers where none ran."""
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
    return pd.DataFrame(out)


def leakage_rows(audit: dict[str, dict]) -> pd.DataFrame:
    return pd.DataFrame([
        {"dataset": balance, "images": a["images"],
         "lesions in several splits": a["lesions_in_several_splits"],
         "synthetic/augmented in val+test": a["non_real_in_val_test"],
         "near-duplicate pairs": a["near_duplicate_pairs_train_vs_val_test"]}
        for balance, a in audit.items()])


SHOWN_PAIRS = 200  # protocol paper pairs every synthetic image with its source: thousands


def pair_rows(audit: dict[str, dict]) -> pd.DataFrame:
    """Every confirmed near-duplicate pair, once: the datasets share their real images."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for balance, a in audit.items():
        for p in a.get("near_duplicates", []):
            key = (p["held_out"], p["train"])
            seen.setdefault(key, {**p, "datasets": []})["datasets"].append(balance)
    return pd.DataFrame([{**p, "datasets": ", ".join(p["datasets"])} for p in seen.values()])


def _table(caption: str, frame: pd.DataFrame) -> str:
    if frame.empty:
        return ""
    body = frame.to_html(index=False, escape=True, border=0)
    return body.replace("<thead>", f"<caption>{html.escape(caption)}</caption><thead>", 1)


def tables_html(experiments: list[dict[str, Any]], evaluations: dict[str, dict],
                trained: dict[str, dict], comparisons: pd.DataFrame, audit: dict[str, dict], *,
                data: dict[str, Any], quarantine: str, resamples: int, rule: str) -> str:
    """The tables page. ``trained``: each experiment's metrics.json (its training budget);
    ``rule``: how the near-duplicate pairs were confirmed."""
    heading = title(data, experiments)
    rows = headline_rows(experiments, evaluations)
    budget = pd.DataFrame([{"experiment": e["name"], "model": e["model"],
                            "balance": e["balance"], "task": e.get("task", "multiclass"),
                            "optimizer steps": trained[e["name"]].get("optimizer_steps", "–"),
                            "images seen": trained[e["name"]].get("images_seen", "–")}
                           for e in experiments])
    parts = [f"<h1>{html.escape(heading)}</h1>",
             f"<p><b>Data:</b> {html.escape(data_line(data, evaluations))}.</p>",
             f"<p><b>How to read this.</b> {html.escape(how_to_read(data, resamples))}</p>",
             _table("Experiments and their training budgets", budget)]
    for metric in HEADLINE:
        label = METRICS[metric].label
        extra = ("CV runs", "balanced accuracy gap") if metric == "balanced_accuracy" else ()
        parts.append(_table(
            f"{label}, sets side by side (95% lesion-cluster intervals, B = {resamples})",
            pd.DataFrame([{"experiment": r["experiment"],
                           **{k: v for k, v in r.items()
                              if k.endswith(f" {label}") or k.startswith(extra)}}
                          for r in rows])))
    parts.append(_table(f"Declared comparisons (paired lesion-cluster bootstrap, B = "
                        f"{resamples}; Holm-adjusted across all of them)",
                        declared_rows(comparisons)))
    parts.append(_table("Leakage audit per dataset", leakage_rows(audit)))
    pairs = pair_rows(audit)
    shown = (f"the first {SHOWN_PAIRS} of {len(pairs)}; all in leakage.json"
             if len(pairs) > SHOWN_PAIRS else f"{len(pairs)}")
    parts.append(_table(f"Near-duplicate pairs across train and val/test ({shown}; {rule})",
                        pairs.head(SHOWN_PAIRS))
                 if len(pairs) else "<p>No near-duplicate pair across train and val/test "
                 f"({html.escape(rule)}).</p>")
    parts.append(f"<p><b>Quarantine</b> (images set aside by validation): "
                 f"{html.escape(quarantine)}.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(heading)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(p for p in parts if p) + "\n</body></html>\n")
