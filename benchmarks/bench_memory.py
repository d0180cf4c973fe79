"""Peak host memory of every stage at the paper's size, each stage in its own process.

A working set of HAM10000's shape is built once under ``--work``: 10,015 x scale images
(its class proportions, 1-6 images per lesion) as a uint8 cache at ``--size`` px, its
index, and the protocol's split made by dermflow's own split function. The stages then run
in a chain, each one a child process calling the library function its rule's script calls
(workflow/scripts/*.py) on what the stages before it wrote: the baseline, its attention maps
(float16), the generator, the synthetic set at the default synthesis targets (gan/plan.py's
counts for that pool), the quality check, every balance mode's dataset, one classifier per
balance mode, predictions, evaluation, comparisons and the report with its leakage audit
over every dataset. Data volumes are the real ones; networks are not, since on the host
the memory is the arrays', not the weights': each timm network is replaced in the child by
a two-convolution stand-in (TinyBackbone), the generator and critic get 4 channels and
train on 2 batches (the whole pool and its maps resident), generate_synthetic's generator
returns its source image (Copy: the C'GAN's inputs and outputs, none of its compute),
SmoothGrad takes one sample, the classifiers 512 images per epoch, LPIPS an untrained
AlexNet, and InceptionV3 is off (no weights offline). The stages that read raw 600x450
JPEGs (validate_dataset, which decodes every image; remove_hair, the DullRazor steps into
PNGs; cache_images, one image at a time into a memmap) run on a zip of them at two sizes
(``--raw``, by default 1,000 and all 10,015) to show their memory does not grow with N.

For each child the parent reads ``ru_maxrss`` (peak resident set, from wait4: it includes
pages of memory-mapped files, which the kernel can drop or write back) and samples
``RssAnon`` (anonymous memory: what must fit in RAM) every 0.2 s; a child whose anonymous
memory passes ``--limit-gb`` is killed and reported. Prints a Markdown table for
benchmarks/RESULTS.md.

    python benchmarks/bench_memory.py --work /tmp/dermflow-memory --scale 1.0
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# HAM10000's images per class (10,015 in all) and how many images its lesions have
HAM10000 = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142,
            "df": 115}
IMAGES_PER_LESION = {1: 0.75, 2: 0.17, 3: 0.05, 4: 0.02, 5: 0.007, 6: 0.003}
BALANCES = ("none", "cgan", "augment", "oversample")
MODEL = "resnet18"  # a registered plain classifier; its backbone is TinyBackbone in the child
OVERRIDES: dict[str, Any] = {
    "baseline": {"pretrained": False, "epochs": 1, "augment": False, "compile": False},
    "attention": {"samples": 1, "batch_size": 64},
    "gan": {"channels": 4, "res_blocks": 1, "critic_channels": 4, "epochs": 1,
            "batch_size": 32},
    "quality": {"inception": False, "on_fail": "warn"},
    "classifier": {"pretrained": False, "epochs": 1, "schedule": "single", "compile": False,
                   "epoch_images": 512, "patience": 0},
}


def metadata(scale: float, seed: int = 0) -> pd.DataFrame:
    """A HAM10000-shaped metadata table: its class proportions, 1-6 images per lesion."""
    rng = np.random.default_rng(seed)
    sizes, weights = list(IMAGES_PER_LESION), list(IMAGES_PER_LESION.values())
    rows, lesion = [], 0
    for dx, count in HAM10000.items():
        n = max(6, round(count * scale))
        while n > 0:
            k = min(n, int(rng.choice(sizes, p=weights)))
            rows += [(f"HAM_{lesion:07d}", dx)] * k
            lesion, n = lesion + 1, n - k
    table = pd.DataFrame(rows, columns=["lesion_id", "dx"])
    order = rng.permutation(len(table))
    from dermflow.labels import CLASSES
    return table.iloc[order].assign(
        image_id=[f"ISIC_{i:07d}" for i in range(len(table))],
        label=lambda t: t["dx"].map(CLASSES.index)).reset_index(drop=True)


def random_images(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random colour images (a few blobs): JPEG-sized like photographs, not noise."""
    import cv2
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (n, 6, 8, 3), dtype=np.uint8)
    return np.stack([cv2.resize(x, size, interpolation=cv2.INTER_CUBIC) for x in low])


def build_working_set(work: Path, scale: float, size: int, raw: list[int]) -> None:
    """The cache, its index and split, and the raw-image zips; kept when already there."""
    from dermflow.atomic import write_csv
    from dermflow.data.split import make_split
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "split.csv").exists():
        meta = metadata(scale).sort_values("image_id").reset_index(drop=True)
        cache = np.lib.format.open_memmap(work / "cache.npy", "w+", np.uint8,
                                          (len(meta), size, size, 3))
        for start in range(0, len(meta), 256):
            part = slice(start, min(start + 256, len(meta)))
            cache[part] = random_images(part.stop - start, (size, size), start)
        cache.flush()
        del cache
        write_csv(meta.assign(row=np.arange(len(meta)))[
            ["row", "image_id", "lesion_id", "dx", "label"]], work / "index.csv")
        write_csv(meta, work / "metadata.csv")
        write_csv(make_split(meta, "grouped", (0.7, 0.2, 0.1), 42), work / "split.csv")
    alexnet = work / "weights" / "alexnet_features_imagenet.pth"
    if not alexnet.exists():  # LPIPS's backbone, untrained: its memory, not its values
        import torch
        import torchvision
        alexnet.parent.mkdir(exist_ok=True)
        torch.save(torchvision.models.alexnet().features.state_dict(), alexnet)
    for n in raw:
        archive = work / f"raw_{n}.zip"
        if archive.exists():
            continue
        import cv2
        with zipfile.ZipFile(archive.with_suffix(".tmp"), "w") as zf:
            for i in range(n):
                image = random_images(1, (600, 450), i)[0]
                zf.writestr(f"ISIC_{i:07d}.jpg", cv2.imencode(".jpg", image)[1].tobytes())
        archive.with_suffix(".tmp").rename(archive)


# --- the child: one stage -------------------------------------------------------------------

def tiny_networks() -> None:
    """Replace every timm network by TinyBackbone (models/backbones.create)."""
    import torch
    from torch import nn

    from dermflow.models import backbones

    class TinyBackbone(nn.Module):
        """Two strided convolutions (16x down) as ``stages``, pooled, a linear head."""

        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
            self.stages = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8),
                                        nn.Sequential(nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1)))
            self.num_features = 16
            self.head = nn.Linear(16, num_classes) if num_classes else nn.Identity()

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.stages(x)

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            pooled = x.mean((2, 3))
            return pooled if pre_logits else self.head(pooled)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.forward_head(self.forward_features(x))

    def create(name: str, *, num_classes: int, **_: Any) -> nn.Module:
        return TinyBackbone(num_classes)

    backbones.create = create


def few_gan_steps(batches: int) -> None:
    """Train the generator on ``batches`` batches per epoch (the whole pool stays resident)."""
    from dermflow.training import engine  # draws every epoch's order, the GAN's too
    order = engine.epoch_order
    batch = OVERRIDES["gan"]["batch_size"]
    engine.epoch_order = lambda *a, **k: order(*a, **k)[:batches * batch]


def copying_generator() -> None:
    """generate_synthetic's generator replaced by one that returns its source image (with its
    attention added): the C'GAN's inputs and outputs, none of its compute."""
    import torch

    from dermflow.gan import synthesis
    load = synthesis.load_networks

    class Copy(torch.nn.Module):
        latent_dim = 64

        def forward(self, x: torch.Tensor, a: torch.Tensor, z: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
            return (x + 0.1 * a).clamp(-1, 1)

    def networks(*args: Any, **kwargs: Any) -> tuple[Any, Any, dict[str, Any]]:
        _, critic, meta = load(*args, **kwargs)
        return Copy(), critic, meta

    synthesis.load_networks = networks


def settings(work: Path) -> dict[str, Any]:
    """config.yaml with the benchmark's overrides, validated (defaults filled)."""
    import yaml

    from dermflow.config import validate_config
    cfg = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    for key, value in OVERRIDES.items():
        cfg[key] = {**cfg[key], **value}
    cfg["image_size"] = int(np.load(work / "cache.npy", mmap_mode="r").shape[1])
    cfg["experiments"] = [{"name": f"{b}_{MODEL}", "balance": b, "model": MODEL}
                          for b in BALANCES]
    return validate_config(cfg)


def raw_metadata(work: Path, n: int) -> pd.DataFrame:
    """The first ``n`` rows of the metadata, each with its raw JPEG in raw_{n}.zip."""
    archive = work / f"raw_{n}.zip"
    return pd.read_csv(work / "metadata.csv").iloc[:n].assign(
        image_id=[f"ISIC_{i:07d}" for i in range(n)],
        path=[f"{archive}::ISIC_{i:07d}.jpg" for i in range(n)])


def run_child(stage: str, work: Path) -> None:
    """Run one stage as its rule's script would, on what the stages before it wrote."""
    import torch
    torch.set_num_threads(2)
    tiny_networks()
    cfg = settings(work)
    cpu = torch.device("cpu")
    w = {k: str(work / v) for k, v in {
        "cache": "cache.npy", "index": "index.csv", "split": "split.csv",
        "baseline": "baseline.pt", "attention": "attention.npy", "generator": "generator.pt",
        "synthetic": "synthetic.npy", "manifest": "synthetic.csv", "pool": "pool_split.csv",
    }.items()}
    out = work / "out" / stage
    out.mkdir(parents=True, exist_ok=True)
    o = lambda name: str(out / name)  # noqa: E731
    name, _, arg = stage.partition(":")
    # the experiments whose classifiers were trained and predicted (at full size: cgan and
    # augment, the balance modes with an extra array, the largest datasets)
    trained = [b for b in BALANCES if (work / "experiments" / b / "predictions.csv").exists()]
    if name == "validate_dataset":
        from dermflow.data.validate import write_validation
        n = int(arg)
        raw_metadata(work, n).to_csv(o("metadata.csv"), index=False)
        write_validation(o("metadata.csv"), [work / f"raw_{n}.zip"], threads=2,
                         out_manifest=o("manifest.csv"), out_quarantine=o("quarantine.csv"),
                         rejected=o("rejected.csv"))
    elif name == "remove_hair":
        from dermflow.data.hair import hair_params, remove_hair_all, summarize
        n = int(arg)
        table = raw_metadata(work, n)
        params = hair_params(cfg["hair_removal"])
        index = remove_hair_all(table, out / "images", out / "masks", params, threads=2)
        summarize(table, index, params, cfg["hair_removal"]["figure_images"],
                  out / "hair_removal_steps.png")
    elif name == "cache_images":
        from dermflow.data.cache import build_cache
        n = int(arg)
        build_cache(raw_metadata(work, n), cfg["image_size"], o("cache.npy"), o("index.csv"),
                    threads=2)
    elif name == "split":
        from dermflow.data.split import split_dataset
        split_dataset(work / "metadata.csv", cfg["protocol"], cfg["split"],
                      out_split=o("split.csv"), out_summary=o("summary.json"))
    elif name == "train_baseline":
        from dermflow.training.baseline import train_baseline
        train_baseline(w["cache"], w["index"], w["split"], protocol=cfg["protocol"],
                       settings=cfg["baseline"], device=cpu, seed=cfg["seed"], weights_dir=None,
                       precision="fp32", checkpoint_dir=out, out_model=w["baseline"],
                       out_history=o("history.csv"), out_curve=o("curve.png"),
                       out_metrics=o("metrics.json"))
    elif name == "extract_attention":
        from dermflow.training.attention import extract_attention
        extract_attention(w["baseline"], w["cache"], w["index"], w["split"],
                          protocol=cfg["protocol"], settings=cfg["attention"], device=cpu,
                          seed=cfg["seed"], precision="fp32", out_npy=w["attention"],
                          out_index=o("attention.csv"), out_figure=o("attention.png"))
    elif name == "train_gan":
        from dermflow.gan.training import train_gan
        few_gan_steps(2)
        train_gan(w["cache"], w["index"], w["split"], w["attention"], protocol=cfg["protocol"],
                  settings=cfg["gan"], device=cpu, seed=cfg["seed"], precision="fp32",
                  checkpoint_dir=out, out_generator=w["generator"],
                  out_history=o("history.csv"), out_curve=o("curve.png"))
    elif name == "generate_synthetic":
        from dermflow.gan.synthesis import generate_synthetic
        copying_generator()
        generate_synthetic(w["generator"], w["cache"], w["index"], w["split"], w["attention"],
                           protocol=cfg["protocol"], settings=cfg["synthesis"], device=cpu,
                           seed=cfg["seed"], precision="fp32", out_npy=w["synthetic"],
                           out_manifest=w["manifest"], out_figure=o("synthetic.png"))
    elif name == "check_synthetic":
        from dermflow.gan.quality import check_synthetic
        check_synthetic(w["baseline"], w["cache"], w["index"], w["split"], w["synthetic"],
                        w["manifest"], protocol=cfg["protocol"], settings=cfg["quality"],
                        weights_dir=str(work / "weights"), device=cpu, seed=cfg["seed"],
                        out_json=str(work / "quality.json"), out_markdown=o("quality.md"),
                        out_nearest=o("nearest.csv"))
    elif name == "split_pool":
        from dermflow.data.split import split_pool
        split_pool(w["split"], w["manifest"], cfg["protocol"], cfg["split"], folds=1, fold=0,
                   out_split=w["pool"])
    elif name == "build_dataset":
        from dermflow.experiments.datasets import build_dataset
        target = work / "datasets" / arg
        target.mkdir(parents=True, exist_ok=True)
        build_dataset(arg, w["cache"], w["index"], w["split"], protocol=cfg["protocol"],
                      split_settings=cfg["split"], seed=cfg["seed"],
                      out_csv=str(target / "dataset.csv"),
                      synthetic_split=w["pool"] if arg == "cgan" else None,
                      synthetic_manifest=w["manifest"] if arg == "cgan" else None,
                      synthesis=cfg["synthesis"] if arg in ("augment", "oversample") else None,
                      out_npy=str(target / "augmented.npy") if arg == "augment" else None)
    elif name in ("train_classifier", "predict"):
        from dermflow.data.preparation import recipe
        from dermflow.models.registry import experiment_settings
        experiment = {"name": f"{arg}_{MODEL}", "balance": arg, "model": MODEL}
        run = work / "experiments" / arg
        run.mkdir(parents=True, exist_ok=True)
        data = work / "datasets" / arg
        extra = {"cgan": w["synthetic"], "augment": str(data / "augmented.npy")}.get(arg)
        merged = experiment_settings(cfg["classifier"], experiment)
        if name == "train_classifier":
            from dermflow.experiments.classifier import train_classifier
            train_classifier(device=cpu, gpus=1, log_file=None,
                             dataset_csv=str(data / "dataset.csv"), cache_npy=w["cache"],
                             extra_npy=extra, name=experiment["name"], experiment=experiment,
                             settings=merged, seed=cfg["seed"], weights_dir=None,
                             precision="fp32", protocol=cfg["protocol"],
                             preparation=recipe(cfg), checkpoint_dir=out,
                             out_model=str(run / "model.pt"), out_history=o("history.csv"),
                             out_curve=o("curve.png"), out_metrics=str(run / "metrics.json"))
        else:
            from dermflow.experiments.predict import predict_experiment
            from dermflow.training.batches import evaluation_batch
            predict_experiment(str(run / "model.pt"), str(data / "dataset.csv"), w["cache"],
                               extra, device=cpu, precision="fp32",
                               per_class=merged["saliency_per_class"],
                               batch_size=evaluation_batch(merged["batch_size"]),
                               out_predictions=str(run / "predictions.csv"),
                               out_saliency=o("saliency.png"))
    elif name == "evaluate":
        from dermflow.evaluation.evaluate import evaluate_experiment
        r = cfg["report"]
        for b in trained:
            run = work / "experiments" / b
            evaluate_experiment(str(run / "predictions.csv"), experiment=f"{b}_{MODEL}",
                                resamples=r["bootstrap"], seed=r["bootstrap_seed"],
                                min_lesions=r["min_lesions"],
                                out_json=str(run / "evaluation.json"),
                                out_bootstrap=o(f"{b}_bootstrap.csv"), out_roc=o(f"{b}_roc.png"),
                                out_pr=o(f"{b}_pr.png"), out_confusion=o(f"{b}_confusion.png"),
                                out_bootstrap_png=o(f"{b}_bootstrap.png"))
    elif name == "compare":
        from dermflow.evaluation.compare import compare_experiments
        r = cfg["report"]
        compare_experiments(
            {f"{b}_{MODEL}": str(work / "experiments" / b / "predictions.csv") for b in trained},
            [(f"cgan_{MODEL}", f"{b}_{MODEL}") for b in trained if b != "cgan"],
            resamples=r["bootstrap"], seed=r["bootstrap_seed"], min_lesions=r["min_lesions"],
            out_csv=str(work / "comparisons.csv"))
    elif name == "report":
        from dermflow.data.validate import QUARANTINE_COLUMNS
        from dermflow.evaluation.report import write_report
        pd.DataFrame(columns=list(QUARANTINE_COLUMNS)).to_csv(o("quarantine.csv"), index=False)
        exp = work / "experiments"
        names = {f"{b}_{MODEL}": b for b in trained}
        write_report(
            [e for e in cfg["experiments"] if e["name"] in names],
            {n: str(exp / b / "evaluation.json") for n, b in names.items()},
            {n: str(exp / b / "metrics.json") for n, b in names.items()},
            {b: (str(work / "datasets" / b / "dataset.csv"),
                 {"cgan": w["synthetic"],
                  "augment": str(work / "datasets" / b / "augmented.npy")}.get(b))
             for b in BALANCES},
            w["cache"], str(work / "comparisons.csv"), o("quarantine.csv"), None,
            [str(work / "quality.json")],
            data={"source": "local", "path": str(work), "image_size": cfg["image_size"],
                  "protocol": cfg["protocol"], "folds": 1, "generator": cfg["gan"]["kind"]},
            resamples=cfg["report"]["bootstrap"], max_bits=cfg["report"]["near_duplicate_bits"],
            max_mae=cfg["report"]["near_duplicate_mae"], out_csv=o("ablation.csv"),
            out_markdown=o("ablation.md"), out_leakage=o("leakage.json"),
            out_rst=o("workflow.rst"), out_tables=o("tables.html"))
    else:
        raise SystemExit(f"unknown stage {stage!r}")


# --- the parent: measure each child ---------------------------------------------------------

def stages(raw: list[int]) -> list[str]:
    """Every stage in the order the workflow runs them."""
    return [*(f"{stage}:{n}" for stage in ("validate_dataset", "remove_hair", "cache_images")
              for n in raw), "split", "train_baseline",
            "extract_attention", "train_gan", "generate_synthetic", "check_synthetic",
            "split_pool", *(f"build_dataset:{b}" for b in BALANCES),
            *(f"train_classifier:{b}" for b in BALANCES), *(f"predict:{b}" for b in BALANCES),
            "evaluate", "compare", "report"]


def anonymous_kib(pid: int) -> int:
    """RssAnon of a running process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def measure(stage: str, work: Path, limit_gb: float) -> dict[str, Any]:
    """Run one stage's child; its peak RSS, peak anonymous memory, wall time and outcome."""
    log_path = work / "logs" / f"{stage.replace(':', '_')}.log"
    log_path.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, __file__, "--child", stage, "--work", str(work)]
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        peak_anon, killed = 0, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_anon = max(peak_anon, anonymous_kib(proc.pid))
            if peak_anon > limit_gb * 2**20 and not killed:
                proc.kill()
                killed = True
            time.sleep(0.2)
    code = os.waitstatus_to_exitcode(status)
    outcome = f"killed above {limit_gb:g} GB" if killed else ("ok" if code == 0 else
                                                               f"failed ({code}, {log_path})")
    return {"stage": stage, "peak_rss_gb": usage.ru_maxrss / 2**20,
            "peak_anon_gb": peak_anon / 2**20, "wall_s": time.monotonic() - start,
            "outcome": outcome}


def volumes(work: Path) -> dict[str, str]:
    """What each array holds, for the table's caption."""
    out = {}
    for name in ("cache.npy", "attention.npy", "synthetic.npy", "datasets/augment/augmented.npy"):
        path = work / name
        if path.exists():
            a = np.load(path, mmap_mode="r")
            out[name] = f"{a.shape} {a.dtype}, {a.nbytes / 2**30:.2f} GiB"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/dermflow-memory"),
                        help="folder for the working set (~10 GB at --scale 1)")
    parser.add_argument("--scale", type=float, default=1.0, help="share of HAM10000's 10,015")
    parser.add_argument("--size", type=int, default=224, help="image side of the cache")
    parser.add_argument("--raw", type=int, nargs="+", default=[1000, 10015],
                        help="raw images read by each run of a raw-image stage")
    parser.add_argument("--limit-gb", type=float, default=12.0,
                        help="kill a stage whose anonymous memory passes this")
    parser.add_argument("--stages", nargs="+", help="only these (default: all, in order)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "build":
        build_working_set(args.work, args.scale, args.size, args.raw)
        return
    if args.child:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        run_child(args.child, args.work)
        return
    args.raw = sorted({min(n, len(metadata(args.scale))) for n in args.raw})
    # in a child too: a child's ru_maxrss starts from its parent's resident set at fork
    subprocess.run([sys.executable, __file__, "--child", "build", "--work", str(args.work),
                    "--scale", str(args.scale), "--size", str(args.size),
                    "--raw", *map(str, args.raw)], check=True)
    rows = []
    for stage in args.stages or stages(args.raw):
        row = measure(stage, args.work, args.limit_gb)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    import torch

    from dermflow.provenance import cpu_name
    n = len(pd.read_csv(args.work / "index.csv"))
    print(f"{dt.date.today()}, {cpu_name()}, torch {torch.__version__}, {n} images at "
          f"{args.size} px; arrays: {volumes(args.work)}\n")
    print("| stage | peak RSS GB | peak anonymous GB | wall s | outcome |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['peak_rss_gb']:.2f} | {r['peak_anon_gb']:.2f} | "
              f"{r['wall_s']:.0f} | {r['outcome']} |")


if __name__ == "__main__":
    main()
