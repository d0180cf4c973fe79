"""check_synthetic: how good, how diverse and how novel the synthetic images are, and a gate.

Synthetic images are compared with the real images the GAN learnt from (the
protocol's training pool): FID, KID and precision/recall overall and per class
(fidelity.py), LPIPS diversity within each class (random pairs of synthetic
images, next to the same figure for real images) and LPIPS to each image's own
source, and a memorisation check: each synthetic image's nearest real training
image in the baseline's feature space, with the pixel distance to it and to its
source. Thresholds from the config then pass the run, or fail it (``fail``) or
let it continue with a warning (``warn``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermflow.atomic import atomic_path, write_csv, write_json
from dermflow.data.cache import load_split_cache
from dermflow.data.split import training_pool
from dermflow.errors import DatasetError, DermflowError
from dermflow.gan.fidelity import NEIGHBOURHOOD, distribution_metrics, extractor, features
from dermflow.gan.memorisation import memorisation
from dermflow.gan.perceptual import load_lpips, lpips_distance
from dermflow.labels import CLASSES
from dermflow.models.backbones import WeightsError

log = logging.getLogger(__name__)

SPACES = {
    "baseline": "feature space of this pipeline's baseline network (comparable within dermflow "
                "only)",
    "inception": "torch-fidelity InceptionV3 pool features (the standard FID)",
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


class QualityGateError(DermflowError):
    """The synthetic images failed a configured quality threshold."""


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
            "per_class": {dx: one(syn_dx == dx, real_dx == dx) for dx in CLASSES}}


def _pairs(n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random index pairs (i != j) out of n items."""
    i = rng.integers(n, size=count)
    return i, (i + rng.integers(1, n, size=count)) % n


def lpips_report(metric: Any, images: np.ndarray, synthetic: np.ndarray, manifest: pd.DataFrame,
                 pool: pd.DataFrame, *, pairs: int, seed: int, batch_size: int,
                 ) -> tuple[dict[str, Any], np.ndarray]:
    """LPIPS diversity per class (synthetic and, for scale, real) and LPIPS to the source
    (NaN for images without one: the DCGAN's)."""
    rng = np.random.default_rng([seed, 2])
    per_class: dict[str, Any] = {}
    pooled: list[torch.Tensor] = []
    sourced = (manifest["source_row"] >= 0).to_numpy()
    to_source = np.full(len(manifest), np.nan)
    if sourced.any():
        to_source[sourced] = lpips_distance(
            metric, torch.from_numpy(synthetic[sourced]),
            torch.from_numpy(images[manifest["source_row"].to_numpy()[sourced]]),
            batch_size).numpy()
    for dx in CLASSES:
        entry: dict[str, Any] = {}
        for name, stack, rows in (
                ("diversity", synthetic, manifest.loc[manifest["dx"] == dx, "row"].to_numpy()),
                ("real_diversity", images, pool.loc[pool["dx"] == dx, "row"].to_numpy())):
            if len(rows) < 2:
                entry[name] = None
                continue
            i, j = _pairs(len(rows), pairs, rng)
            d = lpips_distance(metric, torch.from_numpy(stack[rows[i]]),
                               torch.from_numpy(stack[rows[j]]), batch_size)
            entry[name] = float(d.mean())
            if name == "diversity":
                pooled.append(d)
        mask = (manifest["dx"] == dx).to_numpy() & sourced
        entry["to_source"] = float(to_source[mask].mean()) if mask.any() else None
        per_class[dx] = entry
    return {
        "diversity": float(torch.cat(pooled).mean()) if pooled else None,
        "to_source": float(to_source[sourced].mean()) if sourced.any() else None,
        "per_class": per_class,
        "note": "LPIPS-alex (v0.1); diversity: random pairs of synthetic images of one class; "
                "real_diversity: the same for the real training images",
    }, to_source


def _lookup(report: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, int | float) else None


def gate(report: dict[str, Any], thresholds: dict[str, float | None],
         on_fail: str) -> dict[str, Any]:
    """Each configured threshold checked; unavailable metrics are skipped, and say so."""
    checks = []
    for name, limit in thresholds.items():
        if limit is None:
            continue
        path, kind = CHECKS[name]
        value = _lookup(report, path)
        if value is None:
            status = "skipped (metric unavailable)"
        else:
            status = "passed" if (value <= limit if kind == "max" else value >= limit) else "failed"
        checks.append({"name": name, "threshold": limit, "value": value, "status": status})
    failed = [c for c in checks if c["status"] == "failed"]
    return {"on_fail": on_fail, "passed": not failed, "checks": checks,
            "failed": [c["name"] for c in failed]}


def markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary of quality.json."""
    def fmt(value: Any) -> str:
        if value is None:
            return "–"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [f"# Synthetic image quality ({report['images']['synthetic']} synthetic vs "
             f"{report['images']['real']} real training images)", "",
             "| feature space | FID | KID | precision | recall |", "|---|---|---|---|---|"]
    for space, entry in report["spaces"].items():
        if not entry["available"]:
            lines.append(f"| {space} | unavailable: {entry['reason']} | | | |")
            continue
        o = entry["overall"]
        lines.append(f"| {space} | {fmt(o.get('fid'))} | {fmt(o.get('kid_mean'))} | "
                     f"{fmt(o.get('precision'))} | {fmt(o.get('recall'))} |")
    lp = report["lpips"]
    lines += ["", "| class | synthetic | LPIPS diversity | real LPIPS diversity "
              "| LPIPS to source |", "|---|---|---|---|---|"]
    for dx in CLASSES:
        entry = lp.get("per_class", {}).get(dx, {})
        lines.append(f"| {dx} | {report['images']['per_class'].get(dx, 0)} | "
                     f"{fmt(entry.get('diversity'))} | {fmt(entry.get('real_diversity'))} | "
                     f"{fmt(entry.get('to_source'))} |")
    mem = report["memorisation"]
    lines += ["", f"Nearest real image is the source for "
              f"{fmt(mem['nearest_is_source_fraction'])} of synthetic images; near copies: "
              f"{fmt(mem['near_copy_fraction'])}.", "",
              f"Gate ({report['gate']['on_fail']}): "
              f"{'passed' if report['gate']['passed'] else 'FAILED'}", ""]
    lines += [f"- {c['name']}: {fmt(c['value'])} vs {c['threshold']} → {c['status']}"
              for c in report["gate"]["checks"]]
    return "\n".join(lines) + "\n"


def check_synthetic(baseline_model: str, cache_npy: str, index_csv: str, split_csv: str,
                    synthetic_npy: str, manifest_csv: str, *, protocol: str,
                    settings: dict[str, Any], weights_dir: str | None, device: torch.device,
                    seed: int, out_json: str, out_markdown: str, out_nearest: str,
                    ) -> dict[str, Any]:
    """Measure the synthetic set against the real training pool and apply the gate."""
    images, index = load_split_cache(cache_npy, index_csv, split_csv)
    synthetic = np.load(synthetic_npy)  # in memory once: LPIPS and memorisation both read it
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
        report["lpips"], to_source = {"diversity": None, "available": False,
                                      "reason": str(err)}, None
    report["memorisation"], nearest = memorisation(
        images, synthetic, manifest, pool_rows, base_f[0], base_f[1], index,
        settings["near_copy_mae"])
    if to_source is not None:
        nearest["lpips_source"] = to_source
    report["gate"] = gate(report, settings["thresholds"], settings["on_fail"])
    write_csv(nearest, out_nearest)
    if not report["gate"]["passed"]:
        failed = [f"{c['name']}={c['value']:.4g} (limit {c['threshold']})"
                  for c in report["gate"]["checks"] if c["status"] == "failed"]
        message = "synthetic images failed the quality gate: " + "; ".join(failed)
        if settings["on_fail"] == "fail":
            raise QualityGateError(message + " (quality.on_fail: fail; see quality.* thresholds)")
        log.warning("%s (quality.on_fail: warn, continuing)", message)
    write_json(report, out_json)
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(markdown(report))
    return report
