"""check_synthetic: how good, how diverse and how novel the synthetic images are, and a gate.

Synthetic images are compared with the real images the GAN learnt from (the
protocol's training pool): FID, KID and precision/recall overall and per class
(fidelity.py), each beside the same figure between two random halves of the real
images (what sampling alone gives: the scale to read them against), LPIPS
diversity within each class (random pairs of synthetic images, next to the same
figure for real images) and LPIPS to each image's own source, and a memorisation
check: each synthetic image's nearest real training image in the baseline's
feature space, with the pixel distance to it and to its source.

The gate checks each configured threshold and says ``passed`` only when every one
of them ran and held; ``failed`` when one ran and did not (``quality.on_fail``:
stop or warn); ``incomplete`` when none failed but one could not run (its metric
unavailable, e.g. no LPIPS weights) or none was configured (``quality.on_incomplete``:
stop or warn). Each check records whether it ran, and why not.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermflow.atomic import atomic_path, write_csv, write_json
from dermflow.data.cache import load_split_cache, read_array
from dermflow.data.split import training_pool
from dermflow.errors import DatasetError, DermflowError
from dermflow.gan.fidelity import NEIGHBOURHOOD, distribution_metrics, extractor, features
from dermflow.gan.memorisation import memorisation
from dermflow.gan.perceptual import load_lpips, lpips_distance
from dermflow.labels import CLASSES
from dermflow.models.backbones import WeightsError

log = logging.getLogger(__name__)

SPACES = {
    "baseline": "pooled pre-logit features of this pipeline's baseline network (comparable "
                "within dermflow only)",
    "inception": "torch-fidelity's InceptionV3 pool features (the standard FID, comparable "
                 "with papers)",
}
# threshold name → (where its value is in the report, "max" or "min")
CHECKS: dict[str, tuple[tuple[str, ...], str]] = {
    "fid_inception_max": (("spaces", "inception", "overall", "fid"), "max"),
    "fid_baseline_max": (("spaces", "baseline", "overall", "fid"), "max"),
    "precision_baseline_min": (("spaces", "baseline", "overall", "precision"), "min"),
    "recall_baseline_min": (("spaces", "baseline", "overall", "recall"), "min"),
    "lpips_diversity_min": (("lpips", "diversity"), "min"),
    "near_copy_fraction_max": (("memorisation", "near_copy_fraction"), "max"),
}
# what each figure measures, on what scale, and what a good value is (quality.json, quality.md)
SCALES = {
    "fid": "Fréchet distance between Gaussians fitted to the two sets' features, in squared "
           "feature units: 0 for identical distributions, no upper bound, lower is better. It "
           "grows with the feature space's dimension and scale, so it compares only with values "
           "in the same space: read it against the real-vs-real reference (two random halves "
           "of the real training images), which is what sampling alone gives. In InceptionV3 "
           "space GAN papers report tens (the C'GAN paper: 21.5); the baseline space's values "
           "have no published counterpart.",
    "kid": "Kernel inception distance: unbiased squared MMD with a cubic polynomial kernel of "
           "the features, mean over subsets of up to 1000 images; 0 for identical distributions "
           "(noise can make it slightly negative), lower is better, on the feature space's scale "
           "as FID (papers quote InceptionV3 KID x 1000).",
    "precision": "share of synthetic images inside the real images' k-nearest-neighbour (k=3) "
                 "manifold in [0, 1]: realism, higher is better; compare with the reference.",
    "recall": "share of real images inside the synthetic images' k-nearest-neighbour (k=3) "
              "manifold in [0, 1]: coverage, higher is better; compare with the reference.",
    "lpips": "LPIPS-alex (v0.1) distance: 0 for identical images, roughly 0.1-0.7 between "
             "different natural images. Diversity (mean over random same-class pairs) should "
             "approach the real images' figure; to_source near 0 means the image is its source.",
    "near_copy": "share of synthetic images within quality.near_copy_mae (mean absolute pixel "
                 "difference, [0, 1]) of their source or nearest real training image: 0 is "
                 "best, a near copy adds no new image.",
}


class QualityGateError(DermflowError):
    """The synthetic images failed a quality threshold, or (on_incomplete: fail) one was unmet
    for want of its metric."""


def _enough(n_synthetic: int, n_real: int, minimum: int) -> bool:
    return min(n_synthetic, n_real) >= max(minimum, NEIGHBOURHOOD + 2)


def space_metrics(synthetic: torch.Tensor, real: torch.Tensor, syn_dx: np.ndarray,
                  real_dx: np.ndarray, *, minimum: int, seed: int) -> dict[str, Any]:
    """Distribution metrics overall and per class, or why a set was too small for them."""
    def one(mask_s: np.ndarray, mask_r: np.ndarray) -> dict[str, Any]:
        n_s, n_r = int(mask_s.sum()), int(mask_r.sum())
        if not _enough(n_s, n_r, minimum):
            return {"synthetic": n_s, "real": n_r,
                    "skipped": f"needs at least {max(minimum, NEIGHBOURHOOD + 2)} of each"}
        found = distribution_metrics(synthetic[torch.as_tensor(mask_s)],
                                     real[torch.as_tensor(mask_r)], seed=seed)
        return {"synthetic": n_s, "real": n_r, **found}

    return {"overall": one(np.ones(len(syn_dx), bool), np.ones(len(real_dx), bool)),
            "reference": real_reference(real, minimum=minimum, seed=seed),
            "per_class": {dx: one(syn_dx == dx, real_dx == dx) for dx in CLASSES}}


REFERENCE_KID_SUBSETS = 10  # KID's cost is its subsets; a scale needs fewer than a result


def real_reference(real: torch.Tensor, *, minimum: int, seed: int) -> dict[str, Any]:
    """The distribution metrics between two random halves of the real images: the value
    sampling alone gives, against which the synthetic figures read (a generous floor for
    FID, whose small-sample bias is larger at half the images)."""
    half = len(real) // 2
    if not _enough(half, half, minimum):
        return {"real": half,
                "skipped": f"needs at least {2 * max(minimum, NEIGHBOURHOOD + 2)} real images"}
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    return {"real": half, "note": f"two random halves of the real training images (KID over "
                                  f"{REFERENCE_KID_SUBSETS} subsets)",
            **distribution_metrics(real[order[:half]], real[order[half:2 * half]], seed=seed,
                                   kid_subsets=REFERENCE_KID_SUBSETS)}


def _pairs(n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random index pairs (i != j) out of n items."""
    i = rng.integers(n, size=count)
    return i, (i + rng.integers(1, n, size=count)) % n


LPIPS_NOTE = ("LPIPS-alex (v0.1); diversity: random pairs of synthetic images of one class; "
              "real_diversity: the same for the real training images")


def lpips_report(metric: Any, images: np.ndarray, synthetic: np.ndarray, manifest: pd.DataFrame,
                 pool: pd.DataFrame, *, pairs: int, seed: int, batch_size: int,
                 ) -> tuple[dict[str, Any], np.ndarray]:
    """LPIPS diversity per class (synthetic and, for scale, real) and LPIPS to the source
    (NaN for images without one: the DCGAN's)."""
    rng = np.random.default_rng([seed, 2])
    per_class: dict[str, Any] = {}
    pooled: list[torch.Tensor] = []
    source_rows = manifest["source_row"].to_numpy()
    sourced = source_rows >= 0
    to_source = np.full(len(manifest), np.nan)
    if sourced.any():
        to_source[sourced] = lpips_distance(metric, synthetic, images, batch_size,
                                            rows_a=np.flatnonzero(sourced),
                                            rows_b=source_rows[sourced]).numpy()
    for dx in CLASSES:
        entry: dict[str, Any] = {}
        for name, stack, rows in (
                ("diversity", synthetic, manifest.loc[manifest["dx"] == dx, "row"].to_numpy()),
                ("real_diversity", images, pool.loc[pool["dx"] == dx, "row"].to_numpy())):
            if len(rows) < 2:
                entry[name] = None
                continue
            i, j = _pairs(len(rows), pairs, rng)
            d = lpips_distance(metric, stack, stack, batch_size, rows_a=rows[i], rows_b=rows[j])
            entry[name] = float(d.mean())
            if name == "diversity":
                pooled.append(d)
        mask = (manifest["dx"] == dx).to_numpy() & sourced
        entry["to_source"] = float(to_source[mask].mean()) if mask.any() else None
        per_class[dx] = entry
    return {
        "available": True,
        "diversity": float(torch.cat(pooled).mean()) if pooled else None,
        "to_source": float(to_source[sourced].mean()) if sourced.any() else None,
        "per_class": per_class,
        "note": LPIPS_NOTE,
    }, to_source


def lpips_unavailable(reason: str) -> dict[str, Any]:
    """The LPIPS entry without weights: the shape of a computed one, every figure None."""
    empty = {"diversity": None, "real_diversity": None, "to_source": None}
    return {"available": False, "reason": reason, "diversity": None, "to_source": None,
            "per_class": {dx: dict(empty) for dx in CLASSES}, "note": LPIPS_NOTE}


def _lookup(report: dict[str, Any], path: tuple[str, ...]) -> tuple[float | None, str | None]:
    """The value at ``path``, or None and why it is missing (an unavailable space or LPIPS,
    a set too small, or nothing to measure)."""
    node: Any = report
    for depth, key in enumerate(path):
        where = ".".join(path[:depth]) or "report"
        if isinstance(node, dict) and node.get("available") is False:
            return None, f"{where} unavailable: {node.get('reason', 'no reason given')}"
        if isinstance(node, dict) and "skipped" in node:
            return None, f"{where} skipped: {node['skipped']}"
        if not isinstance(node, dict) or key not in node:
            return None, f"{'.'.join(path)} was not computed"
        node = node[key]
    if not isinstance(node, int | float) or isinstance(node, bool):
        return None, f"{'.'.join(path)} is empty (no images to measure)"
    return node, None


def gate(report: dict[str, Any], thresholds: dict[str, float | None], on_fail: str,
         on_incomplete: str) -> dict[str, Any]:
    """Each configured threshold checked, or skipped with the reason its metric is missing.

    status: ``failed`` when a check that ran failed, else ``incomplete`` when one was skipped
    or none was configured (nothing checked is not a pass), else ``passed``.
    """
    checks = []
    for name, limit in thresholds.items():
        if limit is None:
            continue
        path, kind = CHECKS[name]
        value, reason = _lookup(report, path)
        if value is None:
            status = "skipped"
        else:
            status = "passed" if (value <= limit if kind == "max" else value >= limit) else "failed"
        checks.append({"name": name, "metric": ".".join(path), "threshold": limit, "kind": kind,
                       "value": value, "ran": value is not None, "status": status,
                       "reason": reason})
    failed = [c["name"] for c in checks if c["status"] == "failed"]
    skipped = [c["name"] for c in checks if c["status"] == "skipped"]
    status = "failed" if failed else "incomplete" if skipped or not checks else "passed"
    result = {"status": status, "passed": status == "passed", "on_fail": on_fail,
              "on_incomplete": on_incomplete, "checks": checks, "failed": failed,
              "skipped": skipped, "ran": sum(c["ran"] for c in checks),
              "configured": len(checks)}
    return {**result, "summary": verdict(result)}


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def verdict(g: dict[str, Any]) -> str:
    """The gate's outcome in one sentence: what ran, what failed, what was skipped and why."""
    if not g["configured"]:
        return ("Quality gate: INCOMPLETE: no check is configured (every quality.thresholds "
                "entry is null), so nothing was checked.")
    head = (f"Quality gate: {g['status'].upper()}: {g['ran']} of {g['configured']} configured "
            f"checks ran")
    parts = []
    if g["failed"]:
        parts.append("failed: " + ", ".join(
            f"{c['name']} ({c['value']:.4g} against {c['kind']} {c['threshold']})"
            for c in g["checks"] if c["status"] == "failed"))
    if g["skipped"]:
        parts.append("skipped: " + ", ".join(f"{c['name']} ({c['reason']})"
                                             for c in g["checks"] if c["status"] == "skipped"))
    return head + ("; " + "; ".join(parts) if parts else ", and all passed") + "."


def markdown(report: dict[str, Any]) -> str:
    """quality.json in Markdown: the tables, each figure's scale, and the gate in sentences."""
    def fmt(value: Any) -> str:
        if value is None:
            return "–"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    def row(label: str, o: dict[str, Any]) -> str:
        if "skipped" in o:
            return f"| {label} | skipped: {o['skipped']} | | | |"
        return (f"| {label} | {fmt(o.get('fid'))} | {fmt(o.get('kid_mean'))} | "
                f"{fmt(o.get('precision'))} | {fmt(o.get('recall'))} |")

    g = report["gate"]
    lines = [f"# Synthetic image quality ({report['images']['synthetic']} synthetic vs "
             f"{report['images']['real']} real training images)", "", g["summary"], "",
             "| feature space | FID | KID | precision | recall |", "|---|---|---|---|---|"]
    for space, entry in report["spaces"].items():
        if not entry["available"]:
            lines.append(f"| {space} | unavailable: {entry['reason']} | | | |")
            continue
        lines.append(row(space, entry["overall"]))
        lines.append(row(f"{space}: real vs real (reference)", entry["reference"]))
    lines += [""] + [f"- {space} ({entry['dimensions']}-d): {entry['description']}."
                     for space, entry in report["spaces"].items() if entry["available"]]
    lines += [f"- {name.upper() if len(name) == 3 else name.capitalize()}: {text}"
              for name, text in SCALES.items() if name in ("fid", "kid", "precision", "recall")]
    lp = report["lpips"]
    lines += [""]
    if not lp["available"]:
        lines.append(f"LPIPS was not computed: {lp['reason']}")
    else:
        lines += ["| class | synthetic | LPIPS diversity | real LPIPS diversity "
                  "| LPIPS to source |", "|---|---|---|---|---|"]
        for dx in CLASSES:
            entry = lp["per_class"][dx]
            lines.append(f"| {dx} | {report['images']['per_class'].get(dx, 0)} | "
                         f"{fmt(entry['diversity'])} | {fmt(entry['real_diversity'])} | "
                         f"{fmt(entry['to_source'])} |")
        lines += ["", f"LPIPS: {SCALES['lpips']}"]
    mem = report["memorisation"]
    limit = mem["near_copy_fraction_max"]
    lines += ["", f"Near copies: {_percent(mem['near_copy_fraction'])} of synthetic images "
              f"({mem['near_copies']} of {report['images']['synthetic']}) are within a mean "
              f"absolute pixel difference of {mem['near_copy_mae']} ([0, 1]) of their source or "
              f"their nearest real training image; "
              + (f"the gate allows at most {_percent(limit)} "
                 f"(quality.thresholds.near_copy_fraction_max)." if limit is not None else
                 "the gate does not check their share "
                 "(quality.thresholds.near_copy_fraction_max: null).")]
    if mem["nearest_is_source_fraction"] is not None:
        lines += ["", f"The nearest real training image (baseline features, cosine) is the "
                  f"image's own source for {_percent(mem['nearest_is_source_fraction'])} of "
                  f"the synthetic images made from one."]
    lines += ["", f"Gate checks (a failed check: quality.on_fail: {g['on_fail']}; a skipped "
              f"one: quality.on_incomplete: {g['on_incomplete']}):", ""]
    lines += [f"- {c['name']} ({c['metric']} {'<=' if c['kind'] == 'max' else '>='} "
              f"{c['threshold']}): " + (f"{fmt(c['value'])}, {c['status']}" if c["ran"] else
                                        f"skipped: {c['reason']}")
              for c in g["checks"]]
    return "\n".join(lines) + "\n"


def enforce(g: dict[str, Any]) -> None:
    """Stop (QualityGateError) or warn on a failed or incomplete gate, as the config says."""
    if g["status"] == "failed":
        failed = [f"{c['name']}={c['value']:.4g} (limit {c['threshold']})"
                  for c in g["checks"] if c["status"] == "failed"]
        message = "synthetic images failed the quality gate: " + "; ".join(failed)
        if g["on_fail"] == "fail":
            raise QualityGateError(message + " (quality.on_fail: fail; see quality.* thresholds)")
        log.warning("%s (quality.on_fail: warn, continuing)", message)
    elif g["status"] == "incomplete":
        message = g["summary"]
        if g["on_incomplete"] == "fail":
            raise QualityGateError(
                f"{message} (quality.on_incomplete: fail: provide what the skipped checks need, "
                f"set their quality.thresholds to null, or quality.on_incomplete: warn)")
        log.warning("%s (quality.on_incomplete: warn, continuing)", message)
    else:
        log.info("%s", g["summary"])


def check_synthetic(baseline_model: str, cache_npy: str, index_csv: str, split_csv: str,
                    synthetic_npy: str, manifest_csv: str, *, protocol: str,
                    settings: dict[str, Any], weights_dir: str | None, device: torch.device,
                    seed: int, out_json: str, out_markdown: str, out_nearest: str,
                    ) -> dict[str, Any]:
    """Measure the synthetic set against the real training pool and apply the gate."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    # read a batch at a time, never whole
    synthetic = read_array(synthetic_npy, rule="generate_synthetic")
    manifest = pd.read_csv(manifest_csv)
    if len(manifest) != len(synthetic) or synthetic.shape[1:] != images.shape[1:]:
        raise DatasetError(f"{synthetic_npy} holds {synthetic.shape} but {manifest_csv} lists "
                           f"{len(manifest)} images of the cache's {images.shape[1:]}")
    pool = index[training_pool(index, protocol).to_numpy()]
    pool_rows = pool["row"].to_numpy()
    syn_dx, real_dx = manifest["dx"].to_numpy(), pool["dx"].to_numpy()
    report: dict[str, Any] = {
        "images": {"synthetic": len(manifest), "real": len(pool),
                   "per_class": manifest["dx"].value_counts().reindex(
                       list(CLASSES), fill_value=0).to_dict()},
        "protocol": protocol, "spaces": {}}
    batch = settings["batch_size"]
    base_f: tuple[torch.Tensor, torch.Tensor] | None = None
    for space in ("baseline", "inception"):
        if space == "inception" and not settings["inception"]:
            report["spaces"][space] = {"available": False, "reason": "quality.inception: false"}
            continue
        try:
            ext = extractor(space, baseline_model=baseline_model, weights_dir=weights_dir,
                            device=device)
        except Exception as err:  # InceptionV3 download failures come in many types
            if space == "baseline":
                raise
            log.warning("no InceptionV3 weights (%s): standard FID not computed", err)
            report["spaces"][space] = {"available": False,
                                       "reason": f"{type(err).__name__}: {err}"}
            continue
        log.info("%s features of %d real and %d synthetic images", space, len(pool),
                 len(manifest))
        real_f = features(ext, images, pool_rows, device=device, batch_size=batch)
        syn_f = (features(ext, synthetic, None, device=device, batch_size=batch)
                 if len(manifest) else real_f[:0])
        report["spaces"][space] = {"available": True, "description": SPACES[space],
                                   "dimensions": int(real_f.shape[1]),
                                   **space_metrics(syn_f, real_f, syn_dx, real_dx,
                                                   minimum=settings["min_class_images"],
                                                   seed=seed)}
        if space == "baseline":
            base_f = (syn_f, real_f)
        del ext
    assert base_f is not None
    try:
        metric = load_lpips(weights_dir, device)
        report["lpips"], to_source = lpips_report(
            metric, images, synthetic, manifest, pool, pairs=settings["lpips_pairs"], seed=seed,
            batch_size=batch)
    except WeightsError as err:
        log.warning("%s", err)
        report["lpips"], to_source = lpips_unavailable(str(err)), None
    thresholds = settings["thresholds"]
    report["memorisation"], nearest = memorisation(
        images, synthetic, manifest, pool_rows, base_f[0], base_f[1], index,
        settings["near_copy_mae"], thresholds.get("near_copy_fraction_max"))
    if to_source is not None:
        nearest["lpips_source"] = to_source
    report["scales"] = SCALES
    report["gate"] = gate(report, thresholds, settings["on_fail"], settings["on_incomplete"])
    write_csv(nearest, out_nearest)
    try:
        enforce(report["gate"])
    except QualityGateError:  # the job's outputs go with it: the log keeps what was measured
        log.error("what the check measured:\n%s", markdown(report))
        raise
    write_json(report, out_json)
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(markdown(report))
    return report
