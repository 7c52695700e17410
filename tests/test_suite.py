"""train/suite.py (the evidence suite): its run list covers the issue's methods, its statistics
are right, unfinished runs are left out of the report, and the report is written from the
runs' own metrics files. No training here: the runs' metrics.csv files are written by the test."""
from __future__ import annotations

import csv
import json
import math

import pytest

from train import suite
from train.config import load_config
from train.methods import METHODS


def test_the_runs_cover_every_method_at_k1_and_k5():
    for run in suite.RUNS:
        assert run.method in METHODS, run
        assert METHODS[run.method].multi == (run.k > 1 and run.family != "table II"), run
    families = {r.family for r in suite.RUNS if r.k == 1} - {"none"}
    assert families == {"mixup", "manifold mixup", "cutmix", "fmix", "puzzle mix"}
    for family in families:  # each original has its multi-mix K=5 run
        assert any(r.family == family and r.k == 5 for r in suite.RUNS), family
    assert {r.method for r in suite.RUNS if r.family == "table II"} == {"large_batch_mixup",
                                                                            "batch_augmentation_mixup"}
    assert sorted(suite.K_ABLATION) == [1, 2, 3, 5, 7]
    names = {r.name for r in suite.RUNS}
    assert set(suite.K_ABLATION.values()) <= names
    assert len({suite.slug(r.name) for r in suite.RUNS}) == len(suite.RUNS)  # one folder per run


def test_the_suite_config_is_clean_fashion_mnist():
    cfg = load_config(str(suite.CONFIG))
    assert cfg.dataset == "fashion_mnist" and cfg.label_noise == 0.0


def test_paired_difference_and_its_t_interval():
    a = {0: 0.20, 1: 0.22, 2: 0.21}
    b = {0: 0.19, 1: 0.20, 2: 0.21, 3: 0.5}  # seed 3 has no partner: left out
    d = suite.paired(a, b)
    diffs = [-0.01, -0.02, 0.0]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    assert d["n"] == 3 and d["mean"] == pytest.approx(mean)
    assert d["hi"] - d["mean"] == pytest.approx(4.303 * sd / math.sqrt(3))
    assert d["lo"] < d["mean"] < d["hi"]
    assert suite.paired(a, {}) is None


def write_run(out, run, seed, errors, seconds=2.0):
    folder = suite.run_dir(out, run, seed)
    folder.mkdir(parents=True)
    with (folder / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "test_error", "ece", "noisy_test_error", "epoch_seconds"])
        for e, err in enumerate(errors, 1):
            w.writerow([e, err, err / 10, err * 2, seconds * (3 if e == 1 else 1)])


def test_report_from_the_runs_metrics(tmp_path):
    out = tmp_path / "runs"
    by_name = {r.name: r for r in suite.RUNS}
    for seed, (mix, multi) in enumerate([(0.30, 0.25), (0.32, 0.28), (0.31, 0.26)]):
        write_run(out, by_name["mixup"], seed, [0.5, mix], seconds=2.0)
        write_run(out, by_name["multimix K=5"], seed, [0.5, multi], seconds=8.0)
        write_run(out, by_name["none"], seed, [0.6, 0.4])
    write_run(out, by_name["cutmix"], 0, [0.5])  # unfinished (1 of 2 epochs): not reported
    cfg = load_config(str(suite.CONFIG), ("epochs=2", f"out_dir={out}"))
    results = suite.collect(out, [0, 1, 2], cfg.epochs)
    assert set(results) == {"mixup", "multimix K=5", "none"}
    assert results["mixup"]["seeds"][1]["test_error"] == 0.32
    assert results["mixup"]["epoch_seconds"] == [2.0, 2.0, 2.0]  # the first epoch left out
    text = suite.report(results, cfg, [0, 1, 2], 1.0, tmp_path / "report")
    row = next(line for line in text.splitlines() if line.startswith("| multimix K=5 vs mixup |"))
    assert row.split("|")[2].strip().startswith("-4.67 [")  # (-5 - 4 - 5) / 3 points
    k_rows = [line for line in text.splitlines() if line.startswith("| 5 |") or line.startswith("| 1 |")]
    assert k_rows[0].endswith("| 2.0 | 1.00x |") and k_rows[1].endswith("| 8.0 | 4.00x |")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["results"]["none"]["seeds"]["2"]["test_error"] == 0.4
    for png in ("report_curves.png", "report_k_ablation.png"):
        assert (tmp_path / png).stat().st_size > 10_000
