"""The GPU proof kit: proves and measures every GPU path, and leaves the results in one folder.

One command on a GPU machine runs the GPU tests, the throughput benchmarks and the quick
DAGs, and leaves in one folder everything benchmarks/RESULTS.md needs.

Made for a GPU machine without network, or with little time on it (an offline node, a
machine available for a fixed time). First, where there is network, in the repository:

    python3 benchmarks/gpu_proof.py --prepare --ham DIR --weights DIR

copies the HAM10000 metadata and the 1/3-scale images zip into .data/ham10000 and LPIPS's
AlexNet weights into .data/weights, and downloads the wheels such a machine lacks into .whl/
(benchmarks/gpu_wheels.sh: snakemake, captum, torch-fidelity, lpips, jsonschema, pytest and
their needs). Copy the repository with .whl/ and .data/ to the GPU machine (Python 3.12, CUDA
torch, torchvision, timm, pandas, scikit-learn, opencv and matplotlib there) and run, in its
root:

    python3 benchmarks/gpu_proof.py --budget 1800 --gpu-jobs 2 --out results-gpu

It runs, in order, each step once across calls (state in .gpu-proof/):

 1. install    the wheels of .whl/ into .gpu-proof/site (none there: the packages installed)
 2. env        device, driver, CUDA, torch and package versions; the imports the DAG needs;
               torch.compile's prerequisites (as training checks them: Triton, and the C
               compiler and Python.h it builds with at run time), without which the
               compiled steps are skipped with that reason
 3. bench-*    benchmarks/bench_baseline.py, bench_gan.py (fp32 and bf16) and
               bench_classifier.py at 224 px, batch 128 (baseline, classifier) and 32
               (C'GAN), each against its bare loop, alone on the GPU: first, so their
               figures are clean and come back from the shortest call
 4. gpu-tests  pytest -m gpu -k cuda (tests/test_gpu.py: the CUDA half of the GPU tests)
 5. dag-quick  profiles/gpu-quick (grouped, five experiments, 224 px) on .data/ham10000
 6. dag-paper  profiles/gpu-quick-paper (protocol: paper, the proposed model)
 7. bench-*-compiled  the baseline and fusion benchmarks with torch.compile

After every step it writes summary.md, kit.log and three tar.gz bundles (tables, logs,
figures) into --out, so a machine that is stopped hard still leaves every finished step there.

--budget SECONDS is the time this machine has for the call (without it, no limit). Each step
has an estimated cost on one H100 (steps()); a step that does not fit what is left is recorded
as 'skipped: budget' and runs in a later call. A DAG starts whenever a minute is left: stopped
cleanly at the budget (Snakemake on SIGTERM; training checkpoints every epoch), the next call
resumes it where it stopped. Steps that finished are not run again (--retry reruns failed
ones, and GPU tests that ran with failures: 'done: N failed'). The
first call picks the course, and later calls keep it: with a budget below the full course's
estimate, the short one (both DAGs at profiles/gpu-quick/short.yaml's fewest epochs, started
beside the GPU tests: none of the three measures throughput); otherwise gpu-quick's epochs,
one step after another. --gpu-jobs N lets N of a DAG's GPU jobs share the GPU (most of a short
job is its start-up; per-rule times then include the sharing). --smoke runs the short course
on the CPU with tiny sizes and the demo data (no install, no compiled benchmarks), in a few
minutes on two cores; tests/test_gpu_proof.py runs it. See the README, "On a GPU machine".
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
RESERVE = 45.0  # seconds kept for stopping a step cleanly and collecting
GRACE = 20.0  # seconds a stopped step gets between SIGTERM and SIGKILL
DAG_MINIMUM = 60.0  # seconds a DAG needs to be worth starting (it resumes in the next call)
COMPILE_TESTS = "test_compiled_model"  # tests/test_gpu.py's torch.compile test
PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn",
            "opencv-python-headless", "matplotlib", "snakemake", "captum", "torch-fidelity",
            "lpips", "jsonschema", "pyyaml", "pytest")
IMPORTS = ("snakemake", "captum", "torch_fidelity", "lpips", "jsonschema", "pytest")
HAM_FILES = ("HAM10000_metadata.csv", "HAM10000_images_200x150.zip")
ALEXNET = "alexnet_features_imagenet.pth"
RESULT_FILES = ("report/*.csv", "report/*.md", "report/*.json", "synthetic/quality.*",
                "synthetic/manifest.csv", "experiments/*/metrics.json",
                "experiments/*/evaluation.json", "experiments/*/history.csv",
                "experiments/*/bootstrap.csv", "baseline/metrics.json", "baseline/history.csv",
                "gan/history.csv", "split/summary.json", "data/quarantine.csv",
                "hair/metrics.json", "benchmarks/*.tsv")


@dataclass(frozen=True)
class Step:
    name: str
    command: list[str]
    estimate: float  # seconds it is expected to take (ESTIMATES)
    gpu_only: bool = False  # skipped by --smoke
    compiled: bool = False  # runs torch.compile: needs Triton, a C compiler, Python.h
    dag: str | None = None  # the run folder of a Snakemake step (resumable)
    beside: tuple[str, ...] = ()  # short course: steps started beside this one
    report: Path | None = None  # a file it must write; then exit 1 is 'done: N failed'


def log(line: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    text = f"[gpu_proof {stamp}] {line}"
    print(text, flush=True)
    with open(KIT_LOG, "a") as fh:
        fh.write(text + "\n")


def use_work(work: Path) -> None:
    """Point the kit at its state folder (state.json, logs, installed wheels, run folders)."""
    global WORK, SITE, KIT_LOG
    WORK = work.resolve()
    SITE, KIT_LOG = WORK / "site", WORK / "kit.log"
    (WORK / "logs").mkdir(parents=True, exist_ok=True)


# --- preparing what is copied to the GPU machine (run where there is network) --------------


def copied_size(folders: list[Path]) -> tuple[int, int]:
    """Bytes of the repository's files (tracked + untracked, not ignored) and of ``folders``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True,
                            check=True).stdout.split(b"\0")
    tree = sum((REPO / f.decode()).stat().st_size for f in listed
               if f and (REPO / f.decode()).is_file())
    extra = sum(p.stat().st_size for folder in folders if folder.is_dir()
                for p in folder.rglob("*") if p.is_file())
    return tree, extra


def prepare(ham: Path, weights: Path) -> int:
    data = REPO / ".data"
    (data / "ham10000").mkdir(parents=True, exist_ok=True)
    for name in HAM_FILES:
        source = ham / name
        if not source.is_file():
            print(f"missing {source}: --ham names the folder of {', '.join(HAM_FILES)}")
            return 1
        shutil.copy2(source, data / "ham10000" / name)
    if (weights / ALEXNET).is_file():
        (data / "weights").mkdir(exist_ok=True)
        shutil.copy2(weights / ALEXNET, data / "weights" / ALEXNET)
    else:
        print(f"no {weights / ALEXNET}: LPIPS will be reported as unavailable on the GPU")
    wheels = ["bash", str(REPO / "benchmarks/gpu_wheels.sh")]
    if subprocess.run([*wheels, "--check"], cwd=REPO, capture_output=True).returncode:
        subprocess.run(wheels, cwd=REPO, check=True)
    tree, extra = copied_size([REPO / ".whl", data])
    print(f"\nto copy to the GPU machine: the repository's files {tree / MIB:.1f} MiB + .whl/ "
          f"and .data/ {extra / MIB:.1f} MiB = {(tree + extra) / MIB:.1f} MiB\n"
          "there, in the repository's root, with --budget the seconds that machine has:\n"
          "  python3 benchmarks/gpu_proof.py --budget SECONDS --gpu-jobs 2 --out results-gpu\n"
          "and bring results-gpu/ back (a second call with what time is left resumes)")
    return 0


# --- the steps -----------------------------------------------------------------------------


def dag_command(profile: str, run: str, args: argparse.Namespace, overlays: list[str]) -> list[str]:
    files = [str(REPO / "config.yaml"), str(REPO / "profiles/gpu-quick/gpu-quick.yaml")]
    files += [str(REPO / f) for f in overlays]
    command = [sys.executable, "-m", "snakemake", "--profile", f"profiles/{profile}",
               "--directory", str(WORK / "runs" / run), "--configfile", *files,
               "--rerun-incomplete", "--keep-going", "--scheduler", "greedy"]
    config = []
    if not args.smoke:
        config.append(f"dataset={{source: local, path: {args.ham.resolve()}}}")
    if (args.weights / ALEXNET).is_file():
        config.append(f"weights_dir={args.weights.resolve()}")
    if config:
        command += ["--config", *config]
    if args.smoke:  # two one-thread jobs: a busy 2-core CPU chokes on OpenMP's spinning
        command += ["--cores", "2", "--max-threads", "1"]
    return command


def steps(args: argparse.Namespace, course: str, no_compile: str | None = None) -> list[Step]:
    """The course in order: the benchmarks alone on the GPU first, then the GPU tests and the
    DAGs (``course`` short: at short.yaml's epochs, started beside the tests), the compiled
    benchmarks last. ``no_compile``: why torch.compile cannot run here (its test deselected).

    Estimates are rough seconds on one H100 (from the throughputs profiles/gpu-quick quotes,
    start-up included; to be replaced by the kit's own measurements) or, for --smoke, on two
    busy CPU cores."""
    py = sys.executable
    bench = str(REPO / "benchmarks")
    short = course == "short"

    def cost(h100: float, smoke: float) -> float:
        return smoke if args.smoke else h100

    if args.smoke:  # tiny networks: smoke.yaml's C'GAN and fusion widths, a small timm CNN
        tiny = ["--config", str(smoke_config())]
        baseline = ["--model", "resnet18", "--batch", "4", "--size", "32", "--steps", "2",
                    "--sg-samples", "2", "--sg-batch", "2"]
        gan = ["--batch", "2", "--size", "32", "--steps", "2", *tiny]
        classifier = ["--batch", "4", "--size", "32", "--steps", "2", *tiny]
        epochs = ["profiles/gpu-quick/smoke.yaml"]
    else:  # 224 px; batch 128 for the CNNs, the C'GAN at its training batch of 32
        baseline = ["--batch", "128", "--size", "224", "--steps", "40"]
        gan = ["--batch", "32", "--size", "224", "--steps", "40"]
        classifier = ["--batch", "128", "--size", "224", "--steps", "40"]
        epochs = ["profiles/gpu-quick/short.yaml"] if short else []
    tests = "cuda" if no_compile is None else f"cuda and not {COMPILE_TESTS}"
    report = WORK / "logs" / "gpu-tests.xml"
    return [
        Step("bench-baseline", [py, f"{bench}/bench_baseline.py", *baseline], cost(60, 40)),
        Step("bench-gan-fp32", [py, f"{bench}/bench_gan.py", *gan, "--precision", "fp32"],
             cost(45, 30)),
        Step("bench-gan-bf16", [py, f"{bench}/bench_gan.py", *gan, "--precision", "bf16"],
             cost(45, 30), gpu_only=True),
        Step("bench-classifier", [py, f"{bench}/bench_classifier.py", *classifier],
             cost(60, 40)),
        Step("gpu-tests", [py, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-k", tests,
                           "-p", "no:cacheprovider", "-v",
                           "-o", "addopts=",  # in one process: the machine lacks pytest-xdist
                           f"--junitxml={report}"], cost(120, 60),
             beside=("dag-quick", "dag-paper") if short else (), report=report),
        Step("dag-quick", dag_command("gpu-quick", "quick", args, epochs),
             cost(420 if short else 1200, 240), dag="quick"),
        Step("dag-paper", dag_command("gpu-quick-paper", "paper", args,
                                      [*epochs, "profiles/gpu-quick-paper/paper.yaml"]),
             cost(240 if short else 600, 180), dag="paper"),
        Step("bench-baseline-compiled", [py, f"{bench}/bench_baseline.py", *baseline,
                                         "--compile"], 150, gpu_only=True, compiled=True),
        Step("bench-classifier-compiled", [py, f"{bench}/bench_classifier.py", *classifier,
                                           "--compile"], 180, gpu_only=True, compiled=True),
    ]


def choose_course(args: argparse.Namespace, state: dict) -> str:
    """The first call's choice, kept by later calls (a DAG resumed under other epochs would
    start over): short under a budget below the full course's estimate (the compiled benchmarks
    aside: they may wait for a later call); --smoke runs the short course's order on the CPU."""
    if "course" not in state:
        full = sum(step.estimate for step in steps(args, "full") if not step.compiled)
        short = args.smoke or (args.budget is not None and args.budget < full)
        state["course"] = "short" if short else "full"
    return state["course"]


def compile_missing() -> str | None:
    """Why torch.compile cannot build its CUDA kernels here, or None: what training checks
    before it compiles (dermflow.training.compilation.missing: Triton, the C compiler it
    builds with at run time, Python.h). Only what compiling needs: compiling a test function,
    as training does next, would hold a CUDA context in the kit's process all call long."""
    if str(REPO / "src") not in sys.path:
        sys.path.insert(0, str(REPO / "src"))  # the repository's code, as kit_env's steps get
    import torch

    from dermflow.training.compilation import missing

    lacks = missing(torch.device("cuda"))
    return "torch.compile needs " + " and ".join(lacks) if lacks else None


def smoke_config() -> Path:
    """config.yaml with smoke.yaml merged over it, for the benchmarks' --config."""
    import yaml  # the smoke runs where dermflow's packages are installed

    def merge(base: dict, over: dict) -> dict:
        return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(
            base.get(k), dict) else v for k, v in over.items()}}

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for overlay in ("profiles/gpu-quick/gpu-quick.yaml", "profiles/gpu-quick/smoke.yaml"):
        config = merge(config, yaml.safe_load((REPO / overlay).read_text()))
    path = WORK / "smoke-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Stopped(Exception):
    """The kit itself was sent SIGTERM (the machine's time is up): stop, keep the state,
    collect."""


def on_sigterm(signum: int, frame: object) -> None:
    raise Stopped


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (Snakemake stops its jobs), SIGKILL after GRACE."""
    with suppress(ProcessLookupError):  # it may have ended meanwhile
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=GRACE)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind


def kit_env(args: argparse.Namespace) -> dict[str, str]:
    """The steps' environment: the kit's code and wheels first, every GPU visible to the
    claims, and none of the caller's pytest options (a --basetemp there breaks the GPU tests)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    paths = [str(REPO / "src")]
    if not args.smoke:
        paths.insert(0, str(SITE))
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("PYTEST_ADDOPTS", None)  # the GPU tests' options are the kit's own, not the caller's
    if args.smoke:
        env["OMP_NUM_THREADS"] = "1"
    return env


def install() -> bool:
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    if not wheels:  # a machine with dermflow installed; env says if anything is missing
        log("install: no wheels in .whl/: using the packages installed (for a machine "
            "without them, run --prepare where there is network and copy .whl/ over)")
        return True
    marker = SITE / ".installed"
    listing = "\n".join(w.name for w in wheels)
    if marker.is_file() and marker.read_text() == listing:
        log(f"install: {len(wheels)} wheels already in {SITE}")
        return True
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                           "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
                           "--target", str(SITE), *map(str, wheels)],
                          capture_output=True, text=True)
    (WORK / "logs" / "install.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        log(f"install FAILED:\n{proc.stderr[-3000:]}")
        return False
    marker.write_text(listing)
    log(f"install: {len(wheels)} wheels into {SITE} in {time.monotonic() - started:.0f} s")
    return True


ENV_SCRIPT = """
import importlib, importlib.metadata as md, json, platform, subprocess, sys
info = {"python": platform.python_version(), "executable": sys.executable,
        "platform": platform.platform(), "packages": {}, "imports": {}}
for name in sys.argv[2:]:
    try:
        info["packages"][name] = md.version(name)
    except md.PackageNotFoundError:
        info["packages"][name] = "missing"
for module in sys.argv[1].split(","):
    try:
        importlib.import_module(module)
        info["imports"][module] = "ok"
    except Exception as err:
        info["imports"][module] = f"{type(err).__name__}: {err}"
import torch
info["torch"] = torch.__version__
info["cuda"] = torch.version.cuda
info["cudnn"] = torch.backends.cudnn.version()
info["gpus"] = [dict(name=torch.cuda.get_device_name(i),
                     memory_gib=round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                     capability=".".join(map(str, torch.cuda.get_device_capability(i))))
                for i in range(torch.cuda.device_count())]
try:
    info["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=60).stdout.strip()
except OSError:
    info["nvidia_smi"] = "no nvidia-smi"
import os
info["cpus"] = os.cpu_count()
print(json.dumps(info))
"""


def environment(env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", ENV_SCRIPT, ",".join(IMPORTS), *PACKAGES],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode:
        log(f"env FAILED:\n{proc.stderr[-3000:]}")
        return {}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    (WORK / "env.json").write_text(json.dumps(info, indent=1))
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in info["gpus"]) or "no GPU"
    log(f"env: {gpus}; driver/nvidia-smi: {info['nvidia_smi'] or '-'}; torch {info['torch']} "
        f"(CUDA {info['cuda']}, cuDNN {info['cudnn']}); Python {info['python']}")
    log("env: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    broken = {k: v for k, v in info["imports"].items() if v != "ok"}
    if broken:
        log(f"env: imports FAILING: {broken}")
    return info


# --- state across calls --------------------------------------------------------------------


def load_state() -> dict:
    path = WORK / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"calls": 0, "steps": {}}


def save_state(state: dict) -> None:
    (WORK / "state.json").write_text(json.dumps(state, indent=1))


@dataclass
class Running:
    """A step's process, started by launch()."""

    step: Step
    proc: subprocess.Popen
    begun: float


def launch(step: Step, env: dict[str, str]) -> Running:
    """Start a step's command in its own process group, its output appended to its log."""
    with open(WORK / "logs" / f"{step.name}.txt", "a") as fh:
        fh.write(f"\n$ {' '.join(step.command)}\n")
        fh.flush()
        proc = subprocess.Popen(step.command, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    return Running(step, proc, time.monotonic())


def wait_for(run: Running, limit: float) -> int | None:
    """The exit code of a launched step, or None when it had to be stopped at ``limit``."""
    try:
        code = run.proc.wait(timeout=None if math.isinf(limit) else max(limit, 1))
    except subprocess.TimeoutExpired:
        stop(run.proc)
        return None
    except Stopped:
        stop(run.proc)
        raise
    with suppress(ProcessLookupError):
        os.killpg(run.proc.pid, signal.SIGKILL)  # what it left running (a hung worker)
    return code


def dag_env(args: argparse.Namespace, env: dict[str, str]) -> dict[str, str]:
    """--gpu-jobs N: N GPU jobs share GPU 0 (the claim trusts CUDA_VISIBLE_DEVICES=0)."""
    if args.gpu_jobs <= 1:
        return env
    return {**env, "DERMFLOW_GPU_COUNT": str(args.gpu_jobs), "CUDA_VISIBLE_DEVICES": "0",
            "DERMFLOW_TRUST_CUDA_VISIBLE_DEVICES": "1"}


def over_budget(step: Step, left: float) -> str | None:
    """Why ``step`` does not fit the ``left`` seconds of this call, or None when it does. A DAG
    fits whenever DAG_MINIMUM is left: stopped at the budget, the next call resumes it."""
    need = DAG_MINIMUM if step.dag else step.estimate
    if need <= left:
        return None
    return f"needs ~{need:.0f} s, {max(left, 0):.0f} s of this call's budget left"


def outcome(step: Step, code: int) -> tuple[str, str]:
    """(status, reason) of a step that exited with ``code``. A step with a report (the GPU
    tests' JUnit XML, removed before it starts) ran when it wrote it: 'done', or with some
    tests failing (exit 1) 'done: N failed', which the summary lists and --retry reruns;
    without it the runner itself did not run (not installed, or broken)."""
    text = (WORK / "logs" / f"{step.name}.txt").read_text(errors="replace")
    missing = next((line.strip() for line in reversed(text.rsplit("\n$ ", 1)[-1].splitlines())
                    if "No module named" in line), "")
    if step.report is not None:
        if step.report.is_file() and code == 0:
            return "done", ""
        if step.report.is_file() and code == 1:
            failed = failed_tests(step.report)
            return (f"done: {'some' if failed is None else failed} failed",
                    "tests failed: the summary lists them; --retry reruns them")
        return "failed", (f"exit {code}, no {step.report.name}: the test runner did not run"
                          + (f" ({missing}; benchmarks/gpu_wheels.sh carries it)"
                             if missing else ""))
    if code == 0:
        return "done", ""
    return "failed", f"exit {code}" + (f": {missing}" if missing else "")


def failed_tests(report: Path) -> int | None:
    """Failures and errors a JUnit XML report counts (None if it cannot be read)."""
    try:
        suite = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [suite] if suite.tag == "testsuite" else list(suite.iter("testsuite"))
    try:
        return sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    except ValueError:
        return None


def to_retry(status: str) -> bool:
    """Whether --retry reruns a step of this status: it failed, or tests in it did."""
    return status == "failed" or status.startswith("done: ")


def run_steps(args: argparse.Namespace, state: dict, todo: list[Step], started: float) -> None:
    """Run the pending ones of ``todo`` in order within --budget, recording each in ``state``
    and collecting into --out after each."""
    env = kit_env(args)
    by_name = {step.name: step for step in todo}
    background: dict[str, Running] = {}  # short course: the DAGs started beside the GPU tests
    records = state["steps"]
    no_compile = compile_missing() if any(step.compiled for step in todo) else None

    def left() -> float:
        if args.budget is None:
            return math.inf
        return args.budget - (time.monotonic() - started) - RESERVE

    def pending(step: Step) -> bool:
        record = records.setdefault(step.name, {"status": "not reached", "seconds": 0.0,
                                                "calls": 0})
        if args.smoke and step.gpu_only:
            record.update(status="skipped: CPU smoke", reason="GPU only")
            return False
        if args.steps and step.name not in args.steps:
            return False
        return record["status"] not in ("done", "skipped: CPU smoke") and (
            not to_retry(record["status"]) or args.retry)

    def skip(step: Step, status: str, reason: str) -> None:
        records[step.name].update(status=status, reason=reason)
        log(f"{step.name}: {status} ({reason})")
        save_state(state)
        collect(args, state)

    def start(step: Step) -> Running:
        step_env = dag_env(args, env) if step.dag else env
        if step.dag and records[step.name]["status"] == "stopped":  # killed: clear its lock
            wait_for(launch(Step(step.name, [*step.command, "--unlock"], 0), step_env), 120)
        records[step.name].pop("reason", None)
        if step.report is not None:
            step.report.unlink(missing_ok=True)
        return launch(step, step_env)

    def finish(run: Running, code: int | None) -> None:
        step, record = run.step, records[run.step.name]
        spent = time.monotonic() - run.begun
        record["seconds"] += spent
        record["calls"] += 1
        if code is None:
            record.update(status="stopped", reason="the next call resumes it")
            log(f"{step.name}: stopped after {spent:.0f} s; the next call resumes it")
        else:
            status, reason = outcome(step, code)
            record.update(status=status, rc=code, reason=reason)
            if status == "done":
                log(f"{step.name}: finished in {spent:.0f} s (exit {code})")
            elif status != "failed":
                log(f"{step.name}: finished in {spent:.0f} s, {status.removeprefix('done: ')} "
                    "(listed in summary.md; --retry reruns it)")
            else:
                tail = (WORK / "logs" / f"{step.name}.txt").read_text().splitlines()[-25:]
                log(f"{step.name}: FAILED ({reason}) after {spent:.0f} s:\n" + "\n".join(tail))
        save_state(state)
        collect(args, state)

    def seconds(limit: float) -> str:
        return "no limit" if math.isinf(limit) else f"at most {limit:.0f} s"

    try:
        for step in todo:
            if not pending(step):
                continue
            if step.name in background:
                run = background.pop(step.name)
                log(f"{step.name}: started beside the GPU tests; waiting ({seconds(left())})")
            elif step.compiled and no_compile:
                skip(step, "skipped: compile prerequisites", no_compile)
                continue
            elif reason := over_budget(step, left()):
                skip(step, "skipped: budget", reason)
                continue
            else:
                run = start(step)
                log(f"{step.name}: running, ~{step.estimate:.0f} s expected ({seconds(left())})")
                for name in step.beside:
                    other = by_name[name]
                    if pending(other) and not over_budget(other, left()):
                        background[name] = start(other)
                        records[name]["beside"] = step.name
                        log(f"{name}: running beside {step.name}")
            code = None
            try:
                code = wait_for(run, left())
            finally:
                finish(run, code)
    finally:
        for run in background.values():  # stopped before their turn came
            stop(run.proc)
            finish(run, None)


# --- what comes back -----------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def bench_rows(state: dict) -> list[str]:
    """Each benchmark's Markdown table (its header once, then its rows)."""
    tables: dict[str, list[str]] = {}
    for name in state["steps"]:
        path = WORK / "logs" / f"{name}.txt"
        if not name.startswith("bench-") or not path.is_file():
            continue
        lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
        for header, sep, row in zip(lines[0::3], lines[1::3], lines[2::3], strict=False):
            tables.setdefault(header, [header, sep]).append(row)
    out = []
    for table in tables.values():
        out += [*table, ""]
    return out or ["(no benchmark has finished yet)", ""]


def gpu_test_rows() -> list[str]:
    path = WORK / "logs" / "gpu-tests.xml"
    if not path.is_file():
        return ["(the GPU tests have not finished yet)", ""]
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    rows = []
    for case in suite.iter("testcase"):
        outcome, note = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[kind]
                note = (found.get("message") or "").splitlines()[0][:160] if found.get(
                    "message") else ""
        rows.append([case.get("name"), outcome, f"{float(case.get('time', 0)):.1f}", note])
    totals = {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")}
    return [f"{totals['tests']} tests, {totals['failures']} failed, {totals['errors']} errors, "
            f"{totals['skipped']} skipped.", "",
            *markdown_table(["test", "outcome", "s", "note"], rows), ""]


def rule_rows(results: Path) -> list[str]:
    rows = []
    for tsv in sorted((results / "benchmarks").glob("*.tsv")):
        with open(tsv) as fh:
            record = next(csv.DictReader(fh, delimiter="\t"), None)
        if record:
            rss = record.get("max_rss", "NA")
            rss = f"{float(rss) / 1024:.2f}" if rss not in ("NA", "-", "") else "-"
            rows.append([tsv.stem, f"{float(record['s']):.0f}", rss])
    if not rows:
        return ["(no rule has finished yet)", ""]
    total = sum(float(r[1]) for r in rows)
    return [*markdown_table(["rule", "s", "max RSS GiB"], rows), "",
            f"Sum over rules: {total:.0f} s.", ""]


def classifier_rows(results: Path) -> list[str]:
    rows = []
    for path in sorted(results.glob("experiments/*/metrics.json")):
        m = json.loads(path.read_text())
        rows.append([m["experiment"], m["model"], m["best_epoch"],
                     f"{m['training_seconds']:.0f}", f"{m['images_per_s']:.0f}",
                     f"{m['test'].get('balanced_accuracy', float('nan')):.3f}"])
    baseline = results / "baseline/metrics.json"
    if baseline.is_file():
        m = json.loads(baseline.read_text())
        record = json.loads((results / "baseline/provenance.json").read_text())
        rows.insert(0, ["(baseline)", record["config"]["baseline"]["model"], m["best_epoch"], "-",
                        f"{m['images_per_s']:.0f}",
                        f"{m['test'].get('balanced_accuracy', float('nan')):.3f}"])
    gan = results / "gan/history.csv"
    if gan.is_file():
        with open(gan) as fh:
            history = list(csv.DictReader(fh))
        rate = sorted(float(r["images_per_s"]) for r in history)[len(history) // 2]
        rows.insert(1, ["(generator)", "C'GAN", len(history),
                        f"{sum(float(r['seconds']) for r in history):.0f}", f"{rate:.0f}", "-"])
    if not rows:
        return []
    return ["Training (images/s: median epoch; test balanced accuracy of the kept epoch):", "",
            *markdown_table(["stage", "model", "best epoch", "training s", "img/s",
                             "test bal. acc."], rows), ""]


def protocol_rows() -> list[str]:
    """The proposed model under both protocols: the paper split's inflation."""
    rows = []
    for run in ("quick", "paper"):
        path = WORK / "runs" / run / "results/experiments/cgan_resnet50v2_deit/evaluation.json"
        if not path.is_file():
            continue
        ev = json.loads(path.read_text())
        boot = ev.get("bootstrap", {}).get("overall", {})
        cells = []
        for metric in ("balanced_accuracy", "macro_f1", "macro_auc"):
            point = ev["overall"].get(metric)
            ci = boot.get(metric, {})
            low, high = ci.get("ci_low", float("nan")), ci.get("ci_high", float("nan"))
            cells.append("-" if point is None else f"{point:.3f} ({low:.3f}-{high:.3f})")
        rows.append(["grouped" if run == "quick" else "paper", ev.get("n", "-"), *cells])
    if not rows:
        return ["(neither run has evaluated cgan_resnet50v2_deit yet)", ""]
    return [*markdown_table(["protocol", "test images", "balanced accuracy", "macro F1",
                             "macro ROC AUC"], rows), ""]


def demoted(path: Path) -> list[str]:
    """A Markdown file with its headings two levels down, to nest in the summary."""
    return [("##" + line) if line.startswith("#") else line
            for line in path.read_text().splitlines()] + [""]


def write_summary(args: argparse.Namespace, state: dict) -> None:
    info = json.loads((WORK / "env.json").read_text()) if (WORK / "env.json").is_file() else {}
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})"
                     for g in info.get("gpus", [])) or "no GPU (CPU)"
    course = state.get("course", "full")
    mode = ("smoke (CPU, tiny sizes, demo data; the short course's order)" if args.smoke else
            "short course (profiles/gpu-quick/short.yaml: fewest epochs)" if course == "short"
            else "full course (gpu-quick's epochs)")
    mode += (f"; the DAGs' GPU jobs shared the GPU {args.gpu_jobs} at a time (per-rule "
             "times include the sharing)" if args.gpu_jobs > 1 else "")
    budget = "no limit" if args.budget is None else f"{args.budget:.0f} s"
    lines = [f"# GPU proof kit: {gpus}, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
             "", f"Mode: {mode}. Commit: {commit()}. Calls so far: {state['calls']} (this "
             f"one's budget: {budget}).", "",
             "## Machine and software", ""]
    if info:
        rows = [["GPU", gpus], ["nvidia-smi (name, driver, memory)", info["nvidia_smi"] or "-"],
                ["torch / CUDA / cuDNN", f"{info['torch']} / {info['cuda']} / {info['cudnn']}"],
                ["Python", f"{info['python']} ({info['platform']})"], ["CPUs", info["cpus"]],
                *([k, v] for k, v in info["packages"].items()),
                ["imports", ", ".join(f"{k}: {v}" for k, v in info["imports"].items())],
                ["torch.compile prerequisites", state.get("compile", "-")]]
        lines += [*markdown_table(["", ""], rows), ""]
    lines += ["## Steps", "", *markdown_table(
        ["step", "status", "s (all calls)", "calls", "note", "log (tables.tar.gz)"],
        [[k, v["status"] + (f" (exit {v['rc']})" if v.get("rc") else ""), f"{v['seconds']:.0f}",
          v["calls"], v.get("reason", ""), f"kit/{k}.txt"] for k, v in state["steps"].items()]),
        "",
        "## GPU tests (`pytest -m gpu -k cuda`)", "", *gpu_test_rows(),
        "## Throughput: dermflow's loops against bare loops in the same process", "",
        *bench_rows(state)]
    for run, title in (("quick", "profiles/gpu-quick (protocol grouped)"),
                       ("paper", "profiles/gpu-quick-paper (protocol paper, proposed model)")):
        results = WORK / "runs" / run / "results"
        lines += [f"## DAG: {title}", ""]
        if not results.is_dir():
            lines += ["(not started)", ""]
            continue
        beside = state["steps"].get(f"dag-{run}", {}).get("beside")
        if beside:
            lines += [f"Started beside {beside} and the other DAG (short course): per-rule "
                      "times include that.", ""]
        lines += ["Per rule (Snakemake's benchmark files, results/benchmarks/*.tsv):", "",
                  *rule_rows(results), *classifier_rows(results)]
        for name in ("report/ablation.md", "synthetic/quality.md"):
            if (results / name).is_file():
                lines += [f"### results/{name}", "", *demoted(results / name)]
    lines += ["## The paper split's inflation (cgan_resnet50v2_deit, test split, lesion-cluster "
              "bootstrap 95% intervals)", "", *protocol_rows(),
              "Files: tables.tar.gz (per run: report, quality, metrics, histories, per-rule "
              "benchmark TSVs; the kit's step logs, pytest XML, env.json), logs.tar.gz (rule "
              "and Snakemake logs), figures.tar.gz (every figure), kit.log.", ""]
    write_atomic(WORK / "summary.md", "\n".join(lines).encode())


def commit() -> str:
    if os.environ.get("DERMFLOW_COMMIT"):
        return os.environ["DERMFLOW_COMMIT"]
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown (no .git here)"


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside ``path`` and rename: a kit stopped hard leaves the previous file whole."""
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    os.replace(part, path)


def bundle(path: Path, members: list[tuple[Path, str]]) -> None:
    part = path.with_name(f".{path.name}.part")
    with tarfile.open(part, "w:gz") as tar:
        for source, name in members:
            with suppress(FileNotFoundError):  # a temporary a running job just renamed
                tar.add(source, arcname=name)
    os.replace(part, path)


def collect(args: argparse.Namespace, state: dict) -> None:
    """summary.md, kit.log and the tables, logs and figures bundles into --out: after every
    step, so that whatever stops the machine, the steps finished so far are there."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_summary(args, state)
    tables, logs, figures = [], [], []
    for run in ("quick", "paper"):
        folder = WORK / "runs" / run
        results = folder / "results"
        for pattern in RESULT_FILES:
            tables += [(p, f"{run}/results/{p.relative_to(results)}")
                       for p in sorted(results.glob(pattern))]
        figures += [(p, f"{run}/{p.relative_to(folder)}") for p in sorted(results.rglob("*.png"))
                    if "hair/images" not in str(p) and "hair/masks" not in str(p)]
        logs += [(p, f"{run}/{p.relative_to(folder)}") for p in sorted(folder.glob("logs/*.log"))]
        logs += [(p, f"{run}/snakemake/{p.name}")
                 for p in sorted(folder.glob(".snakemake/log/*.log"))]
    tables += [(p, f"kit/{p.name}") for p in sorted((WORK / "logs").glob("*"))]
    tables += [(p, f"kit/{p.name}") for p in (WORK / "env.json", WORK / "state.json")
               if p.is_file()]
    bundle(out / "tables.tar.gz", tables)
    bundle(out / "logs.tar.gz", logs)
    bundle(out / "figures.tar.gz", figures)
    write_atomic(out / "summary.md", (WORK / "summary.md").read_bytes())
    write_atomic(out / "kit.log", KIT_LOG.read_bytes() if KIT_LOG.is_file() else b"")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the CPU course, tiny sizes")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="seconds this call may take; steps that do not fit are skipped "
                             "to a later call (default: no limit)")
    parser.add_argument("--out", type=Path, default=Path("gpu-proof-out"),
                        help="where the summary and bundles go (default gpu-proof-out)")
    parser.add_argument("--work", type=Path, default=REPO / ".gpu-proof",
                        help="state, installed wheels, run folders (default .gpu-proof)")
    parser.add_argument("--ham", type=Path, default=REPO / ".data/ham10000",
                        help="HAM10000 metadata + images zip (default .data/ham10000)")
    parser.add_argument("--weights", type=Path, default=REPO / ".data/weights",
                        help=f"folder with {ALEXNET} for LPIPS (default .data/weights)")
    parser.add_argument("--gpu-jobs", type=int, default=1,
                        help="GPU jobs of the DAGs sharing GPU 0 at once (default 1)")
    parser.add_argument("--retry", action="store_true", help="rerun steps that failed")
    parser.add_argument("--steps", type=lambda v: v.split(","), default=None,
                        help="only these steps this call, comma-separated (e.g. dag-paper)")
    parser.add_argument("--prepare", action="store_true",
                        help="where there is network: copy data and weights, get the wheels")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare:
        return prepare(args.ham, args.weights)
    use_work(args.work)
    state = load_state()
    course = choose_course(args, state)
    unknown = set(args.steps or ()) - {s.name for s in steps(args, course)}
    if unknown:
        sys.exit(f"--steps: no step {', '.join(sorted(unknown))}")
    started = time.monotonic()
    no_compile = compile_missing()
    state["calls"] += 1
    state["compile"] = no_compile or "ok (Triton, a C compiler and Python.h)"
    save_state(state)
    budget = "no limit" if args.budget is None else f"{args.budget:.0f} s"
    log(f"call {state['calls']}: budget {budget}, {course} course, work {WORK}, out {args.out}"
        + (" (smoke)" if args.smoke else ""))
    if no_compile:
        log(f"torch.compile: {no_compile}; the compiled steps are skipped")
    code = 0
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if not args.smoke and not install():
            return 1  # the wheels did not install: nothing else can run
        environment(kit_env(args))
        collect(args, state)
        run_steps(args, state, steps(args, course, no_compile), started)
    except Stopped:
        log("stopped by SIGTERM: the step running was stopped; the next call resumes it")
        code = 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        save_state(state)
        records = state["steps"]
        pending = [k for k, v in records.items()
                   if v["status"] in ("not reached", "stopped", "skipped: budget")]
        failed = [k for k, v in records.items() if to_retry(v["status"])]

        log(f"call {state['calls']} ended after {time.monotonic() - started:.0f} s: "
            + (f"to do next call: {', '.join(pending)}" if pending else "every step ran")
            + (f"; FAILED: {', '.join(failed)}" if failed else ""))
        collect(args, state)
    return code or (1 if failed else 0)


WORK = SITE = KIT_LOG = Path()

if __name__ == "__main__":
    sys.exit(main())
