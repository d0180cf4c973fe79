"""Evaluation, comparisons and the report on the demo DAG, and `snakemake --report`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake

from dermflow.evaluation.compare import TOO_FEW
from dermflow.evaluation.metrics import HEADLINE
from dermflow.labels import task_classes

pytestmark = pytest.mark.workflow
EXPERIMENTS = yaml.safe_load((REPO / "profiles/demo/demo.yaml").read_text())["experiments"]
NAMES = [e["name"] for e in EXPERIMENTS]
CLASSES_OF = {e["name"]: task_classes(e.get("task", "multiclass")) for e in EXPERIMENTS}
FIGURES = ("roc.png", "precision_recall.png", "confusion.png", "bootstrap.png")
# The README's report command after the demo, as a user types it.
REPORT = ("--profile", "profiles/demo", "--report", "report.html")
# Ordinary windows: a laptop's and a desktop's browser.
WINDOWS = ((1280, 720), (1400, 900))


@pytest.fixture(scope="module")
def demo_report(demo_run) -> Path:
    """report.html of the demo run, built by the README's command."""
    assert f"snakemake {' '.join(REPORT)}" in (REPO / "README.md").read_text()
    snakemake(demo_run, *REPORT)
    return demo_run / "report.html"


@pytest.mark.parametrize("experiment", NAMES)
def test_every_experiment_is_evaluated_with_bootstrap_intervals(demo_run, experiment):
    folder = demo_run / "results/experiments" / experiment
    evaluation = json.loads((folder / "evaluation.json").read_text())
    predictions = pd.read_csv(folder / "predictions.csv")
    assert evaluation["n"] == (predictions["split"] == "test").sum()
    assert set(evaluation["per_class"]) == set(CLASSES_OF[experiment])
    accuracy = evaluation["bootstrap"]["overall"]["accuracy"]
    assert accuracy["ci_low"] <= evaluation["overall"]["accuracy"] <= accuracy["ci_high"]
    assert accuracy["se"] > 0 and evaluation["bootstrap"]["resamples"] == 1000
    boot = pd.read_csv(folder / "bootstrap.csv")
    assert {"mean", "std", "se", "ci_low", "ci_high"} <= set(boot.columns)
    assert set(boot["scope"]) == {"overall", *CLASSES_OF[experiment]}
    for figure in FIGURES:
        assert (folder / figure).read_bytes()[:4] == b"\x89PNG", figure


def test_experiments_are_compared_pairwise_on_the_same_test_images(demo_run):
    table = pd.read_csv(demo_run / "results/report/comparisons.csv")
    explored = table[(table["scope"] == "exploratory") & (table["split"] == "test")]
    n = len(NAMES)
    assert len(explored) == n * (n - 1) // 2 * len(HEADLINE)
    same_task = [CLASSES_OF[a] == CLASSES_OF[b] for a, b in zip(explored["a"], explored["b"],
                                                                   strict=True)]
    notes = explored.loc[same_task, "note"]  # grouped: one test split for all, so paired
    assert (notes.isna() | notes.str.startswith(TOO_FEW)).all()
    assert (explored.loc[[not s for s in same_task], "note"] ==
            "different tasks: not compared").all()
    explored = explored[same_task]
    assert explored["p_value"].between(0, 1).all()
    assert (explored["ci_low"] <= explored["difference"] + 1e-12).all()  # equal when constant
    assert set(table["split"]) == {"test", "external"}


def test_declared_comparisons_are_the_proposed_model_against_its_baselines_holm_adjusted(
        demo_run):
    table = pd.read_csv(demo_run / "results/report/comparisons.csv")
    declared = table[table["scope"] == "declared"]
    pairs = set(zip(declared["a"], declared["b"], strict=True))
    assert pairs == {("cgan_resnet50v2_deit", "augment_resnet50v2_deit"),
                     ("cgan_resnet50v2_deit", "none_resnet50v2_deit"),
                     ("cgan_resnet50v2_deit", "strong_baseline")}
    assert len(declared) == len(pairs) * len(HEADLINE) * 2  # x metrics x (test, external)
    tested = declared[declared["note"].isna()]
    assert (tested["p_holm"] >= tested["p_value"]).all()
    assert declared["p_holm"].max() <= 1 and (declared["unit"] == "lesion").all()
    # the demo's test split has classes of one lesion: differences of its class averages
    # (every headline metric) are no test, and no Holm p-value counts them as holding
    few = json.loads((demo_run / "results/experiments/cgan_resnet50v2_deit/evaluation.json"
                      ).read_text())["bootstrap"]["too_few_lesions"]
    on_test = declared[declared["split"] == "test"]
    noted = on_test["note"].str.startswith(TOO_FEW, na=False)
    assert (noted == bool(few)).all() and on_test.loc[noted, "p_holm"].isna().all()
    markdown = (demo_run / "results/report/ablation.md").read_text()
    comparisons = [line.split("|")[1:-1] for line in markdown.splitlines()
                   if line.startswith(("| test |", "| external |"))]
    p_values = [cell.strip() for row in comparisons for cell in row[6:]]  # p (and Holm p)
    assert p_values and "0.000" not in p_values  # p-values: '< 0.001', never 0.000
    assert "lesion-cluster bootstrap, B = 1000" in markdown


def test_report_has_the_ablation_table_and_a_clean_leakage_audit(demo_run):
    table = pd.read_csv(demo_run / "results/report/ablation.csv")
    assert list(table["experiment"].unique()) == NAMES
    assert len(table) == sum(len(CLASSES_OF[name]) + 2 for name in NAMES)
    assert set(table.loc[table["task"] == "binary", "class"]) == {
        "benign", "malignant", "macro average", "weighted average"}
    markdown = (demo_run / "results/report/ablation.md").read_text()
    assert "cgan_resnet50v2_deit (v)" in markdown and "Leakage audit" in markdown
    audit = json.loads((demo_run / "results/report/leakage.json").read_text())
    assert audit["protocol"] == "grouped"
    assert set(audit["datasets"]) == {"none", "cgan", "augment"}
    for counts in audit["datasets"].values():
        assert counts["lesions_in_several_splits"] == 0
        assert counts["non_real_in_val_test"] == 0


def test_html_report_opens_with_the_headline_and_holds_every_figure(demo_run, demo_report):
    rst = (demo_run / "results/report/workflow.rst").read_text()
    audit = json.loads((demo_run / "results/report/leakage.json").read_text())["datasets"]
    duplicates = max(a["near_duplicate_pairs_train_vs_val_test"] for a in audit.values())
    assert rst.startswith("dermflow: demo data, 32 px\n")
    assert "**Data:** generated demo images (not real lesions), 32 px, grouped; test " in rst
    assert "**Best** (test balanced accuracy)" in rst
    if duplicates:  # the demo generator draws a few look-alike lesions: the audit says so
        assert ("**Leakage: yes** (grouped): 0 lesions in several splits, 0 synthetic/augmented "
                f"images in val/test, {duplicates} near-duplicate pairs") in rst
    else:
        assert "**Leakage: none found**" in rst
    tables = (demo_run / "results/report/tables.html").read_text()
    assert all(name in tables for name in NAMES)
    pairs = {p["held_out"] for a in audit.values() for p in a["near_duplicates"]}
    assert len(pairs) >= bool(duplicates) and all(p in tables for p in pairs)  # each listed
    assert "**Quarantine:** dataset: 0; external test set: 0." in rst
    html = demo_report.read_text(errors="replace")
    expected = ["training_curve.png", "saliency.png", *FIGURES, "examples.png", "losses.png",
                "quality.md", "ablation.md", "tables.html", "attention_overlays.png",
                "dermflow: demo data", "align-items: flex-start"]
    missing = [name for name in expected if name not in html]
    assert not missing


def test_paper_protocol_leaks_and_the_headline_says_so(smoke_course):
    # the GPU kit's CPU course runs the demo DAG under protocol: paper, proposed model only
    assert smoke_course.second.returncode == 0, smoke_course.second.stdout[-3000:]
    paper_run = smoke_course.work / ".gpu-proof/runs/paper"
    audit = json.loads((paper_run / "results/report/leakage.json").read_text())
    assert audit["protocol"] == "paper"
    counts = audit["datasets"]["cgan"]
    assert counts["lesions_in_several_splits"] > 0 and counts["non_real_in_val_test"] > 0
    rst = (paper_run / "results/report/workflow.rst").read_text()
    assert (f"**Leakage: yes** (paper): {counts['lesions_in_several_splits']} lesions "
            "in several splits") in rst
    assert "**Declared comparisons:** none could be made" in rst


def test_external_test_set_is_predicted_and_reported_but_never_trained_on(demo_run):
    index = pd.read_csv(next((demo_run / "results/external").glob("index_*.csv")))
    assert pd.read_csv(demo_run / "results/external/quarantine.csv").empty
    for balance in ("none", "cgan", "augment"):
        dataset = pd.read_csv(demo_run / f"results/datasets/{balance}/dataset.csv")
        assert not set(dataset["image_id"]) & set(index["image_id"])
    for name in NAMES:
        folder = demo_run / "results/experiments" / name
        external = pd.read_csv(folder / "predictions.csv").query("split == 'external'")
        assert sorted(external["image_id"]) == sorted(index["image_id"])
        evaluation = json.loads((folder / "evaluation.json").read_text())
        assert evaluation["external"]["n"] == len(index)
        assert "balanced_accuracy" in evaluation["external"]["bootstrap"]["overall"]
    assert "external macro ROC AUC" in (demo_run / "results/report/ablation.md").read_text()


def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver (.ci/run installs them), or a skip saying so."""
    pytest.importorskip("selenium", reason="selenium is in the test extra: pip install -e .[test]")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    return browser, driver


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"{w[0]}x{w[1]}")
def test_report_answer_is_in_the_first_screen_of_a_real_browser(demo_report, window, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        width, height = window
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        driver.get(demo_report.as_uri())
        WebDriverWait(driver, 60).until(
            lambda d: d.execute_script("return document.querySelector('h1.title') !== null"))
        driver.save_screenshot(str(tmp_path / "report.png"))  # kept when the test fails
        boxes = driver.execute_script("""
            const box = e => { const r = e.getBoundingClientRect();
                               return {text: e.innerText, top: r.top, bottom: r.bottom,
                                       left: r.left, right: r.right}; };
            return {view: [window.innerWidth, window.innerHeight],
                    title: box(document.querySelector('h1.title')),
                    answer: [...document.querySelector('h1.title').parentElement
                                 .querySelectorAll('li')].map(box)};""")
    finally:
        driver.quit()
    view_width, view_height = boxes["view"]
    assert (view_width, view_height) == window
    assert boxes["title"]["text"] == "dermflow: demo data, 32 px"
    answer = [boxes["title"], *boxes["answer"]]
    texts = [b["text"] for b in boxes["answer"]]
    assert texts[0].startswith("Data:") and texts[-1].startswith("Quarantine"), texts
    assert any(t.startswith("Leakage") for t in texts), texts
    hidden = [b["text"][:60] for b in answer
              if b["top"] < 0 or b["bottom"] > view_height or b["left"] < 0
              or b["right"] > view_width]
    assert not hidden, f"outside the first {width}x{height} screen: {hidden}"
