"""The ablation study: its rows and presets, the report's statistics, the experimental recurrent
SEB, and ``python -m exfuse_keras.ablation --quick`` end to end (written, then skipped on rerun)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from exfuse_keras.ablation import report
from exfuse_keras.ablation.rows import (CONFIG_DIR, TABLE3, TABLE4, modules_on, preset_overrides, rows_for,
                                        scaled_blocks)
from exfuse_keras.config import ConfigError, config_from_dict, load_config, load_config_stack
from tests.helpers import tiny_config_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENES = os.path.join(ROOT, "configs", "data", "scenes.yaml")


# Rows and presets -------------------------------------------------------------------------------

def test_rows_have_their_configs_and_the_paper_numbers():
    assert [r.paper_miou for r in TABLE3[:7]] == [76.0, 77.5, 78.3, 78.8, 79.0, 79.6, 80.0]
    assert [r.paper_miou for r in TABLE4] == [78.3, 78.2, 77.6, 78.8]
    for row in rows_for("all"):
        assert os.path.isfile(os.path.join(CONFIG_DIR, row.config)), row.config
    # Table 4's baseline and ECRE rows are Table 3's rows 3 and 4: the same runs.
    assert load_config(os.path.join(CONFIG_DIR, TABLE4[3].config)) == load_config(
        os.path.join(CONFIG_DIR, TABLE3[3].config))
    assert TABLE4[0].run_name == TABLE3[2].run_name
    with pytest.raises(ValueError, match="--table"):
        rows_for("5")
    assert [r.key for r in rows_for("dap")] == ["5", "6", "6-noBR", "6-noBR*"]
    assert [r.key for r in rows_for("ecre")] == ["3", "4", "4-soft", "4-upsampled", "4-soft*", "4-upsampled*",
                                                 "4-w0.1", "4-w0.1*"]
    configs = [load_config(os.path.join(CONFIG_DIR, r.config)).train for r in rows_for("ecre")[1:]]
    assert [c.ecre_target for c in configs] == ["nearest", "soft", "upsampled", "soft", "upsampled", "nearest", "nearest"]
    assert [c.ecre_loss_weight for c in configs] == [1.0] * 5 + [0.1, 0.1]
    # The starred rows reuse their targets' runs and pair them with today's nearest target.
    ecre = {r.key: r for r in rows_for("ecre")}
    assert [ecre[k].run_name for k in ("4-soft*", "4-upsampled*")] == [ecre["4-soft"].run_name,
                                                                      ecre["4-upsampled"].run_name]
    assert ecre["4-soft*"].reference == ecre["4-upsampled*"].reference == "4"
    assert ecre["4-w0.1*"].run_name == ecre["4-w0.1"].run_name != ecre["4"].run_name
    assert (ecre["4-w0.1"].reference, ecre["4-w0.1*"].reference) == ("3", "4")


def test_modules_of_each_row():
    expected = ["-", "-", "LR", "LR+ECRE", "LR+SEB", "LR+SEB+DAP", "LR+SEB+DAP+ECRE", "LR+SEBx2+DAP+ECRE"]
    assert [modules_on(load_config(os.path.join(CONFIG_DIR, r.config))) for r in TABLE3] == expected
    assert [modules_on(load_config(os.path.join(CONFIG_DIR, r.config))) for r in TABLE4] == [
        "LR", "LR+deconv-sup", "LR+subpixel", "LR+ECRE"]


def test_cpu_preset_scales_the_network_and_keeps_each_rows_switches():
    assert scaled_blocks([3, 4, 23, 3]) == [1, 1, 6, 1]
    assert scaled_blocks([8, 8, 9, 8]) == [2, 2, 2, 2]
    for row in rows_for("all"):
        path = os.path.join(CONFIG_DIR, row.config)
        paper = load_config_stack([path, SCENES])
        cpu = load_config_stack([path, SCENES], preset_overrides("cpu", paper.model.backbone.blocks))
        for switch in ("seb", "ecre", "dap", "upsampling"):
            assert getattr(cpu.model, switch) == getattr(paper.model, switch), (row.config, switch)
        assert cpu.model.backbone.blocks == scaled_blocks(paper.model.backbone.blocks)
        assert cpu.model.backbone.base_channels == 8 and cpu.data.dataset == "scenes" and cpu.data.num_classes == 12
    assert preset_overrides("paper", [3, 4, 23, 3]) == []


def test_load_config_stack_merges_later_files_over_earlier_ones(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("train: {batch_size: 4, epochs: 3}\ndata: {crop_size: 64}\n")
    second.write_text("train: {epochs: 7}\n")
    cfg = load_config_stack([str(first), str(second)], ["data.crop_size=96"])
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.data.crop_size) == (4, 7, 96)
    second.write_text("train: {epochs: 0}\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config_stack([str(first), str(second)])


# Report statistics ------------------------------------------------------------------------------

def test_increment_interval_and_test_match_scipy():
    """The 95% interval is scipy's t interval on the paired differences, the p-value ttest_rel's."""
    from scipy import stats

    row, reference = np.array([0.52, 0.55, 0.49, 0.53]), np.array([0.50, 0.51, 0.50, 0.50])
    d = row - reference
    result = report.paired_increment(d)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert result["ci"] == pytest.approx([low, high])
    assert result["p"] == pytest.approx(stats.ttest_rel(row, reference).pvalue)
    assert result["mean"] == pytest.approx(d.mean()) and result["std"] == pytest.approx(d.std(ddof=1))
    assert result["verdict"] == f"inconclusive at ± {100 * (high - d.mean()):.1f}"
    assert report.paired_increment([0.03, 0.05, 0.04])["verdict"] == "helps"
    assert report.paired_increment([-0.03, -0.05, -0.04])["verdict"] == "hurts"
    one = report.paired_increment([0.01])
    assert one["p"] is None and one["ci"] is None and one["verdict"] == "one seed: not resolved"
    # With a pooled sd the verdict's interval is t(df) * sd_pool / sqrt(n) around the mean.
    pooled = report.paired_increment(d, (0.01, 9))
    half = stats.t.ppf(0.975, 9) * 0.01 / np.sqrt(len(d))
    assert pooled["pooled_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert pooled["verdict"] == "helps" and pooled["ci"] == pytest.approx([low, high])


def test_pooled_sd_and_detectable_effect_against_scipy():
    """The pooled sd is that of a one-way ANOVA's residuals; the detectable effect is the true
    increment at which a paired t-test has 80% power (noncentral t), to the formula's accuracy."""
    from scipy import stats

    rng = np.random.default_rng(0)
    groups = [rng.normal(0, 0.02, n) for n in (3, 5, 4)]
    sd, df = report.pooled_sd(groups)
    residuals = np.concatenate([g - g.mean() for g in groups])
    assert df == 9 and sd == pytest.approx(np.sqrt(np.sum(residuals ** 2) / 9))
    assert report.pooled_sd([[0.1], [0.2]]) == (None, 0)
    for n, df in ((3, 20), (5, 40)):
        mde = report.detectable_effect(0.02, df, n)
        crit = stats.t.ppf(0.975, df)
        ncp = mde / (0.02 / np.sqrt(n))
        power = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
        assert 0.78 < power < 0.82, (n, df, power)


def _fake_results(rows, seeds, kinds=None):
    results = {}
    for i, row in enumerate(rows):
        for s in range(seeds):
            results[(row.run_name, s)] = {"row": row.run_name, "seed": s, "modules": "x", "val_miou": 0.4 + 0.01 * i
                                          + 0.002 * s * i, "val_boundary_miou": 0.2 + 0.005 * i, "train_seconds": 10.0,
                                          "params": 1000 * (i + 1), "gflops": 0.1, "eval_size": 128,
                                          "cpu": {"kind": (kinds or {}).get((row.run_name, s), "AMD Zen 3")}}
    return results


def test_increments_are_against_the_papers_reference_rows_and_paired_by_seed():
    rows = rows_for("all")
    results = _fake_results(rows, 3)
    summary = report.summarize(rows, results, 3)
    by_key = {(s["table"], s["row"]): s for s in summary}
    refs = {key[1]: s["delta_vs"] for key, s in by_key.items() if key[0] == "3"}
    assert refs == {"1": None, "2": "1", "3": "2", "4": "3", "5": "3", "6": "5", "7": "6", "8": "7"}
    # row 7 (index 6) minus row 6 (index 5): 0.01 + 0.002 * seed, paired by seed.
    assert by_key[("3", "7")]["delta_miou"]["mean"] == pytest.approx(0.01 + 0.002)
    assert by_key[("3", "7")]["delta_miou"]["std"] == pytest.approx(0.002)
    assert by_key[("3", "7")]["paper_delta"] == 0.4 and by_key[("3", "6")]["paper_delta"] == 0.6
    assert by_key[("4", "subpixel")]["paper_delta"] == -0.7 and by_key[("4", "baseline")]["delta_miou"] is None
    # Table 4's baseline is Table 3's row 3, read from the same runs.
    assert by_key[("4", "baseline")]["val_miou"] == by_key[("3", "3")]["val_miou"]
    table = report.format_table(summary)
    assert "### Verdicts" in table and "### Table 3" in table and "### Table 4" in table
    assert "| DAP | #6 − #5 | +0.6 |" in table and "0.00 (" not in table and "p = " not in table


def test_a_comparison_two_tables_share_enters_the_pool_once():
    """Tables 3 and 4: Table 4's ECRE row is #4 - #3 again; the pooled sd (numpy, over the eight
    distinct comparisons of the paper's rows, 2 df each; row 8 is ours) is what the intervals use."""
    from scipy import stats

    rng = np.random.default_rng(3)
    names = sorted({r.run_name for r in rows_for("all")})
    results = {(name, s): {"seed": s, "val_miou": float(rng.uniform(0.3, 0.6)), "cpu": {"kind": "X"}}
               for name in names for s in range(3)}
    summary = {(s["table"], s["row"]): s for s in report.summarize(rows_for("all"), results, 3)}
    distinct = [("row2_ss", "row1_gcn_baseline"), ("row3_ss_lr", "row2_ss"), ("row4_ecre", "row3_ss_lr"),
                ("row5_seb", "row3_ss_lr"), ("row6_seb_dap", "row5_seb"), ("row7_exfuse", "row6_seb_dap"),
                ("table4_deconv_supervised", "row3_ss_lr"), ("table4_subpixel_only", "row3_ss_lr")]
    diffs = [np.array([results[(a, s)]["val_miou"] - results[(b, s)]["val_miou"] for s in range(3)]) for a, b in distinct]
    sd = np.sqrt(sum(((d - d.mean()) ** 2).sum() for d in diffs) / 16)
    half = stats.t.ppf(0.975, 16) * sd / np.sqrt(3)
    assert summary[("3", "2")]["delta_miou"]["pooled_half_width"] == pytest.approx(half, rel=1e-9)
    assert summary[("4", "ECRE")]["delta_miou"]["pooled_half_width"] == pytest.approx(half, rel=1e-9)


def test_an_experimental_rows_verdict_needs_both_intervals():
    """Two seeds 0.2 points apart: their own interval excludes 0, the pooled one (sd 1.65 points,
    6 df) does not; a paper row is judged by the pool, an experimental row by both."""
    from scipy import stats

    d = [-0.022, -0.024]
    paper, ours = report.paired_increment(d, (0.0165, 6)), report.paired_increment(d, (0.0165, 6), both=True)
    own_high = np.mean(d) + stats.t.ppf(0.975, 1) * np.std(d, ddof=1) / np.sqrt(2)
    pooled_half = stats.t.ppf(0.975, 6) * 0.0165 / np.sqrt(2)
    assert own_high < 0 and np.mean(d) + pooled_half > 0  # the case: own excludes 0, pooled does not
    assert paper["verdict"] == ours["verdict"] == f"inconclusive at ± {100 * pooled_half:.1f}"
    wide = report.paired_increment([-0.01, -0.06], (0.005, 6), both=True)  # pooled excludes 0, own does not
    assert report.paired_increment([-0.01, -0.06], (0.005, 6))["verdict"] == "hurts"
    assert wide["verdict"] == f"inconclusive at ± {100 * stats.t.ppf(0.975, 1) * np.std([-0.01, -0.06], ddof=1) / np.sqrt(2):.1f}"
    assert report.paired_increment([-0.05, -0.052], (0.005, 6), both=True)["verdict"] == "hurts"


def test_several_tables_in_one_report_share_one_pool():
    """``--table all,ecre``: the ECRE screen's rows (experimental) get the pooled interval of Tables
    3 and 4's comparisons; ECRE's own #4 - #3 is the comparison Table 3 holds, counted once."""
    rows = rows_for("all,ecre")
    assert rows[:len(rows_for("all"))] == rows_for("all") and rows[len(rows_for("all")):] == rows_for("ecre")
    assert rows_for("3,3") == rows_for("3")
    with pytest.raises(ValueError, match="comma list of them\\), got 'five'"):
        rows_for("3,five")
    rng = np.random.default_rng(4)
    results = {(r.run_name, s): {"seed": s, "val_miou": float(rng.uniform(0.3, 0.6)), "cpu": {"kind": "X"}}
               for r in rows for s in range(3)}
    both = {(s["table"], s["row"]): s for s in report.summarize(rows, results, 3)}
    alone = {(s["table"], s["row"]): s for s in report.summarize(rows_for("all"), results, 3)}
    assert both[("3", "2")]["delta_miou"]["pooled_half_width"] == alone[("3", "2")]["delta_miou"]["pooled_half_width"]
    assert both[("ecre", "4-soft")]["delta_miou"]["pooled_half_width"] == pytest.approx(
        alone[("3", "2")]["delta_miou"]["pooled_half_width"])


def test_runs_on_different_cpu_kinds_are_not_paired():
    rows = rows_for("3")
    kinds = {(rows[1].run_name, 2): "Intel Emerald Rapids"}  # row 2's seed 2 ran elsewhere
    summary = {s["row"]: s for s in report.summarize(rows, _fake_results(rows, 3, kinds), 3)}
    assert summary["2"]["delta_miou"]["n"] == 2 and summary["3"]["delta_miou"]["n"] == 2
    assert summary["4"]["delta_miou"]["n"] == 3
    assert summary["2"]["cpu"] == ["AMD Zen 3", "Intel Emerald Rapids"]


def test_a_row_with_one_seed_shows_no_spread():
    """A partly finished sweep: rows with one seed say so instead of a made-up ± 0.00."""
    rows = rows_for("3")
    results = _fake_results(rows, 2)
    for row in rows[4:]:
        del results[(row.run_name, 1)]
    table = report.format_table(report.summarize(rows, results, 2))
    lines = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ") and "#" not in
             line.split(" | ")[0]}
    assert "± " in lines["| 2"] and "(1 seed)" not in lines["| 2"]
    assert "(1 seed)" in lines["| 7"] and "± " not in lines["| 7"]
    assert "one seed: not resolved" in table


def test_dap_table_compares_both_placements_with_row_5():
    from exfuse_keras.ablation.rows import TABLE_DAP

    configs = {r.key: load_config(os.path.join(CONFIG_DIR, r.config)).model for r in TABLE_DAP}
    assert configs["6"].dap.placement == "upsampling_br" and configs["6-noBR"].dap.placement == "upsampling"
    assert [r.reference for r in TABLE_DAP] == [None, "5", "5", "6"]
    assert TABLE_DAP[3].run_name == TABLE_DAP[2].run_name  # the placements' own pair: 6-noBR's runs again
    assert not configs["5"].dap.enabled and configs["6"].seb == configs["5"].seb


def test_controls_compare_with_row_1_and_keep_their_switches_under_the_cpu_preset():
    from exfuse_keras.ablation.rows import TABLE_CONTROLS
    from exfuse_keras.ablation.sweep import SweepSettings, row_config

    assert [r.key for r in rows_for("controls")] == ["1", "1-blind", "1-stride8"]
    assert [r.reference for r in TABLE_CONTROLS] == [None, "1", "1"]
    settings = SweepSettings(preset="cpu", data=os.path.join(ROOT, "configs", "data", "scenes_128.yaml"), seeds=1,
                             steps=4000, output="unused")
    models = {r.key: row_config(r, settings, 0).model for r in TABLE_CONTROLS}
    assert models["1"].gcn_kernel == 7 and models["1-stride8"].gcn_kernel == 7
    assert models["1-blind"].gcn_kernel == 1, "the preset's k = 7 must not replace the control's switch"
    assert models["1-blind"].decoder_levels == ["res2"]
    assert models["1-stride8"].decoder_levels == ["res3", "res4", "res5"]
    assert models["1"].decoder_levels == ["res2", "res3", "res4", "res5"]
    for key in ("1-blind", "1-stride8"):  # everything else is row 1's
        assert models[key].backbone == models["1"].backbone and models[key].seb == models["1"].seb


def test_controls_report_each_class_group_paired_by_seed():
    """The group's mean IoU per run, the control minus row 1 per seed, its t interval: against numpy and scipy."""
    from scipy import stats

    from exfuse_keras.ablation.rows import TABLE_CONTROLS
    from exfuse_keras.data.scenes import SCENES_CLASSES

    rng = np.random.default_rng(3)
    iou = {(r.run_name, s): rng.uniform(0.2, 0.9, len(SCENES_CLASSES)) for r in TABLE_CONTROLS for s in range(3)}
    iou[("control_context_blind", 2)][SCENES_CLASSES.index("wire")] = np.nan  # a class a run never scored
    results = {key: {"row": key[0], "seed": key[1], "val_miou": float(np.nanmean(v)), "val_boundary_miou": 0.1,
                     "per_class_iou": [None if np.isnan(x) else float(x) for x in v], "cpu": {"kind": "Zen 3"}}
               for key, v in iou.items()}
    summary = report.summarize(TABLE_CONTROLS, results, 3, list(SCENES_CLASSES))
    blind = next(s for s in summary if s["row"] == "1-blind")
    for group, members in report.CONTROL_GROUPS.items():
        index = [SCENES_CLASSES.index(c) for c in members]
        deltas = [np.nanmean(iou[("control_context_blind", s)][index])
                  - np.nanmean(iou[("row1_gcn_baseline", s)][index]) for s in range(3)]
        got = blind["class_groups"][group]
        assert got["mean"] == pytest.approx(np.mean(deltas), abs=1e-12)
        half = stats.t.ppf(0.975, 2) * np.std(deltas, ddof=1) / np.sqrt(3)
        assert got["ci"] == pytest.approx([np.mean(deltas) - half, np.mean(deltas) + half], abs=1e-12)
    # The contrast: per run, context's mean IoU minus the look-alikes'; then paired as a group is.
    group = lambda run, names: np.nanmean(iou[run][[SCENES_CLASSES.index(c) for c in names]])  # noqa: E731
    contrast = [(group(("control_context_blind", s), ("nucleus", "boxed")) - group(("control_context_blind", s),
                                                                                  ("disc", "square")))
                - (group(("row1_gcn_baseline", s), ("nucleus", "boxed")) - group(("row1_gcn_baseline", s),
                                                                               ("disc", "square")))
                for s in range(3)]
    assert blind["class_groups"]["context − look-alikes"]["mean"] == pytest.approx(np.mean(contrast), abs=1e-12)
    assert "class_groups" not in next(s for s in summary if s["row"] == "1")
    table = report.format_table(summary)
    assert "### Positive controls by class group" in table and "| 1-stride8 − #1 |" in table
    assert report.summarize(TABLE_CONTROLS, results, 3, ["bg", "a"])[1]["class_groups"] == {}  # not scenes


def test_every_modules_increment_is_split_by_class_group_paired_by_seed():
    """Where a module's gain comes from: SEB's (#5 - #3) context - look-alikes IoU contrast and its
    context - shape accuracy contrast against numpy and scipy, paired only within a CPU kind; a
    row whose runs recorded no per-class IoU is left out; a comparison two tables share is shown once."""
    from scipy import stats

    from exfuse_keras.data.scenes import SCENES_CLASSES

    rng = np.random.default_rng(5)
    rows = [r for r in TABLE3 if r.key in ("1", "2", "3", "4", "5")] + list(TABLE4)
    names = {r.run_name for r in rows}
    iou = {(name, s): rng.uniform(0.2, 0.9, len(SCENES_CLASSES)) for name in names for s in range(4)}
    confusion = {key: rng.uniform(1, 100, (len(SCENES_CLASSES),) * 2) for key in iou}
    results = {key: {"row": key[0], "seed": key[1], "val_miou": float(np.mean(v)), "val_boundary_miou": 0.1,
                     "per_class_iou": [float(x) for x in v], "confusion_matrix": confusion[key].tolist(),
                     "cpu": {"kind": "Zen 4" if key == ("row5_seb", 3) else "Zen 3"}} for key, v in iou.items()}
    for seed in range(4):  # SS's runs from before per-class IoU and confusion matrices were recorded
        del results[("row2_ss", seed)]["per_class_iou"], results[("row2_ss", seed)]["confusion_matrix"]
    summary = report.summarize(rows, results, 4, list(SCENES_CLASSES))
    seb = next(s for s in summary if s["row"] == "5")
    index = {c: SCENES_CLASSES.index(c) for c in ("nucleus", "boxed", "disc", "square")}
    partner = {"nucleus": "disc", "disc": "nucleus", "boxed": "square", "square": "boxed"}

    def iou_contrast(run):
        mean = lambda group: np.mean(iou[run][[index[c] for c in group]])  # noqa: E731
        return mean(("nucleus", "boxed")) - mean(("disc", "square"))

    def accuracy_contrast(run):
        m = confusion[run]
        four = [index[c] for c in index]
        context = [m[index[c], index[c]] / (m[index[c], index[c]] + m[index[c], index[partner[c]]]) for c in index]
        shape = [(m[index[c], index[c]] + m[index[c], index[partner[c]]]) / m[index[c], four].sum() for c in index]
        return np.mean(context) - np.mean(shape)

    # Seed 3's row 5 ran on another CPU kind than its row 3: three pairs, not four.
    for measure, contrast in (("context − look-alikes", iou_contrast), (report.PAIR_CONTRAST, accuracy_contrast)):
        deltas = [contrast(("row5_seb", s)) - contrast(("row3_ss_lr", s)) for s in range(3)]
        got = seb["class_groups"][measure]
        half = stats.t.ppf(0.975, 2) * np.std(deltas, ddof=1) / np.sqrt(3)
        assert got["n"] == 3 and got["mean"] == pytest.approx(np.mean(deltas), abs=1e-12)
        assert got["ci"] == pytest.approx([np.mean(deltas) - half, np.mean(deltas) + half], abs=1e-12)
    table = report.format_table(summary)
    section = table.split("### Each increment by class group")[1].split("###")[0]
    line = next(x for x in section.splitlines() if x.startswith("| SEB: #5 − #3 |"))
    header = next(x for x in section.splitlines() if x.startswith("| comparison |"))
    cells = dict(zip(header.strip("| ").split(" | "), line.strip("| ").split(" | ")))
    assert cells["Δ context − look-alikes [95% CI]"] == report.format_increment(seb["class_groups"]["context − look-alikes"])
    assert cells[f"Δ {report.PAIR_CONTRAST} [95% CI]"] == report.format_increment(seb["class_groups"][report.PAIR_CONTRAST])
    assert "SS: #2 − #1" not in section and "LR: #3 − #2" not in section  # row 2 has no per-class IoU
    # Table 4's rows by their keys; its ECRE row is Table 3's #4 - #3, shown once.
    assert "| ECRE's supervision alone: deconv+sup − baseline |" in section
    assert section.count("#4 − #3") == 1 and "ECRE − baseline" not in section
    assert "### Positive controls by class group" not in table


def test_pair_accuracies_tell_a_lost_context_from_a_lost_shape():
    """Context and shape accuracy from a confusion matrix, against a per-class loop over the
    pixels' labels; a model that calls nucleus and disc at random but never square keeps its
    shape accuracy and halves its context accuracy."""
    from exfuse_keras.data.scenes import SCENES_CLASSES

    names = list(SCENES_CLASSES)
    rng = np.random.default_rng(5)
    truth = rng.integers(0, len(names), 20000)
    called = np.where(rng.uniform(size=truth.size) < 0.6, truth, rng.integers(0, len(names), truth.size))
    matrix = np.zeros((len(names), len(names)), np.int64)
    np.add.at(matrix, (truth, called), 1)
    pairs = {"nucleus": "disc", "disc": "nucleus", "boxed": "square", "square": "boxed"}
    context, shape = [], []
    for own, partner in pairs.items():
        mine = called[truth == names.index(own)]
        in_pair = np.isin(mine, [names.index(own), names.index(partner)])
        in_four = np.isin(mine, [names.index(c) for c in pairs])
        context.append(np.mean(mine[in_pair] == names.index(own)))
        shape.append(in_pair.sum() / in_four.sum())
    got = report.pair_accuracies(matrix.tolist(), names)
    assert got["context accuracy"] == pytest.approx(np.mean(context), abs=1e-12)
    assert got["shape accuracy"] == pytest.approx(np.mean(shape), abs=1e-12)

    blind = np.eye(len(names)) * 100
    for a, b in (("nucleus", "disc"), ("boxed", "square")):
        i, j = names.index(a), names.index(b)
        blind[[i, i, j, j], [i, j, i, j]] = 50
    got = report.pair_accuracies(blind, names)
    assert got == {"context accuracy": 0.5, "shape accuracy": 1.0}
    assert report.pair_accuracies(blind, ["background", "disc"]) is None  # not scenes
    blind[:, names.index("boxed")] = 0
    blind[:, names.index("square")] = 0
    assert report.pair_accuracies(blind, names) is None  # a pair never called: no share to take


def test_controls_report_pair_accuracies_paired_by_seed_when_runs_recorded_them():
    from scipy import stats

    from exfuse_keras.ablation.rows import TABLE_CONTROLS
    from exfuse_keras.data.scenes import SCENES_CLASSES

    rng = np.random.default_rng(8)
    results = {}
    for r in TABLE_CONTROLS:
        for s in range(3):
            matrix = rng.integers(1, 50, (12, 12)) + np.eye(12, dtype=np.int64) * 400
            results[(r.run_name, s)] = {"row": r.run_name, "seed": s, "val_miou": 0.5, "val_boundary_miou": 0.1,
                                        "per_class_iou": [0.5] * 12, "cpu": {"kind": "Zen 3"},
                                        "confusion_matrix": matrix.tolist()}
    summary = report.summarize(TABLE_CONTROLS, results, 3, list(SCENES_CLASSES))
    blind = next(s for s in summary if s["row"] == "1-blind")

    def contrast(key):
        got = report.pair_accuracies(results[key]["confusion_matrix"], list(SCENES_CLASSES))
        return got["context accuracy"] - got["shape accuracy"]

    deltas = [contrast(("control_context_blind", s)) - contrast(("row1_gcn_baseline", s)) for s in range(3)]
    got = blind["class_groups"][report.PAIR_CONTRAST]
    half = stats.t.ppf(0.975, 2) * np.std(deltas, ddof=1) / np.sqrt(3)
    assert got["mean"] == pytest.approx(np.mean(deltas), abs=1e-12)
    assert got["ci"] == pytest.approx([np.mean(deltas) - half, np.mean(deltas) + half], abs=1e-12)
    assert "### Positive controls: context and shape errors" in report.format_table(summary)
    for run in results.values():  # runs from before matrices were recorded: no accuracies, no table
        del run["confusion_matrix"]
    summary = report.summarize(TABLE_CONTROLS, results, 3, list(SCENES_CLASSES))
    assert report.PAIR_CONTRAST not in next(s for s in summary if s["row"] == "1-blind")["class_groups"]
    assert "context and shape errors" not in report.format_table(summary)


# The experimental recurrent SEB ------------------------------------------------------------------

def _levels(rng, batch=2, height=32, width=40, channels=(8, 16, 32, 64)):
    return [rng.normal(size=(batch, -(-height // 2 ** i), -(-width // 2 ** i), c)).astype("float32")
            for i, c in enumerate(channels)]


def test_one_iteration_is_exactly_the_semantic_embedding_branch():
    from exfuse_keras.layers import RecurrentSemanticEmbedding, SemanticEmbeddingBranch

    xs = _levels(np.random.default_rng(0))
    fusion = RecurrentSemanticEmbedding(1, gate_init="glorot")
    outputs = [np.asarray(o) for o in fusion(xs)]
    for i in range(3):
        seb = SemanticEmbeddingBranch(gate_init="glorot")
        seb.build([x.shape for x in xs[i:]])
        seb.set_weights(fusion.embeddings[0][i].get_weights())
        np.testing.assert_array_equal(outputs[i], np.asarray(seb([xs[i], *xs[i + 1:]])))
    np.testing.assert_array_equal(outputs[3], xs[3])


def test_untrained_recurrent_embedding_is_the_identity_and_training_moves_every_weight():
    import keras

    from exfuse_keras.layers import RecurrentSemanticEmbedding

    rng = np.random.default_rng(1)
    xs = _levels(rng, height=30, width=22)  # odd sizes: levels rounded up, as the backbone's
    fusion = RecurrentSemanticEmbedding(3)
    for out, x in zip(fusion(xs), xs):
        np.testing.assert_array_equal(np.asarray(out), x)
    # 3 SEBs with 3, 2, 1 convs per iteration (kernel + bias), and 3 refinements after the first.
    assert len(fusion.trainable_weights) == 3 * 12 + 2 * 6
    # Every weight reaches the outputs: with the zero initialisations perturbed (they pass no
    # gradient to what feeds them until the later iterations have learned), one step moves all.
    for weight in fusion.weights:
        weight.assign(weight.numpy() + 0.1 * rng.normal(size=weight.shape))
    inputs = [keras.Input(x.shape[1:]) for x in xs]
    model = keras.Model(inputs, keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(o) for o in fusion(inputs)]))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    before = [w.numpy().copy() for w in fusion.trainable_weights]
    model.train_on_batch(xs, rng.normal(size=(2, 120)).astype("float32"))
    unchanged = [w.path for w, b in zip(fusion.trainable_weights, before) if np.array_equal(w.numpy(), b)]
    assert not unchanged


def test_recurrent_embedding_serializes_and_takes_any_size(tmp_path):
    import keras

    from exfuse_keras.layers import RecurrentSemanticEmbedding

    rng = np.random.default_rng(2)
    fusion = RecurrentSemanticEmbedding(2, gate_init="glorot", name="fusion")
    inputs = [keras.Input((None, None, c)) for c in (8, 16, 32, 64)]
    model = keras.Model(inputs, fusion(inputs))
    path = str(tmp_path / "fusion.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert reloaded.get_layer("fusion").get_config() == fusion.get_config()
    for height, width in ((32, 40), (24, 64)):
        xs = _levels(rng, height=height, width=width)
        for got, want, x in zip(reloaded.predict(xs, verbose=0), model.predict(xs, verbose=0), xs):
            assert got.shape == x.shape
            np.testing.assert_allclose(got, want, atol=1e-5)
    mixed = RecurrentSemanticEmbedding(2, dtype="mixed_float16")
    outputs = mixed(_levels(rng))
    assert all(keras.backend.standardize_dtype(o.dtype) == "float16" for o in outputs)
    assert {sub.dtype_policy.name for sub in mixed._flatten_layers(include_self=False)} == {"mixed_float16"}


def test_model_with_two_iterations_and_the_config_key():
    from exfuse_keras.model import build_model

    one = build_model(config_from_dict(tiny_config_dict()))
    values = tiny_config_dict()
    values["model"]["seb"] = {"enabled": True, "iterations": 2}
    two = build_model(config_from_dict(values))
    outputs = two(np.zeros((1, 64, 96, 3), "float32"))
    assert outputs["logits"].shape == (1, 64, 96, 5)
    assert two.count_params() > one.count_params()
    assert "recurrent_seb" in [layer.name for layer in two.layers]
    values["model"]["seb"]["iterations"] = 0
    with pytest.raises(ConfigError, match="model.seb.iterations"):
        config_from_dict(values)


# The command, end to end --------------------------------------------------------------------------

def test_a_finished_run_is_reused_only_by_a_sweep_with_its_settings(tmp_path):
    from exfuse_keras.ablation.sweep import SweepSettings, budget_record, finished, run_dir

    row = TABLE3[0]
    settings = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path))
    os.makedirs(run_dir(row, settings, 0))
    path = os.path.join(run_dir(row, settings, 0), "result.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"val_miou": 0.5, "settings": budget_record(settings)}, f)
    assert finished(row, settings, 0)["val_miou"] == 0.5
    assert finished(row, SweepSettings(data=SCENES, steps=1200, seeds=5, output=str(tmp_path)), 0) is not None
    assert finished(row, settings, 1) is None
    with pytest.raises(ConfigError, match=r"result.json was trained with steps=1200 \(this sweep: 3000\)"):
        finished(row, SweepSettings(data=SCENES, steps=3000, output=str(tmp_path)), 0)
    with pytest.raises(ConfigError, match=r"another design than row1_gcn_baseline.yaml now \(train.learning_rate="
                                          r"[0-9.]+ \(now 0.1\)\); give this sweep its own --output"):
        finished(row, SweepSettings(data=SCENES, steps=1200, output=str(tmp_path),
                                    overrides=["train.learning_rate=0.1"]), 0)
    with pytest.raises(ConfigError, match=r"overrides=\[\] \(this sweep: \['data.crop_size=96'\]\)"):
        finished(row, SweepSettings(data=SCENES, steps=1200, output=str(tmp_path), overrides=["data.crop_size=96"]), 0)
    with open(path, "w", encoding="utf-8") as f:  # a result from before settings were recorded: its steps
        json.dump({"val_miou": 0.5, "steps_run": 1200, "stopped_by_time_budget": False}, f)
    assert finished(row, settings, 0) is not None
    with pytest.raises(ConfigError, match="steps=1200"):
        finished(row, SweepSettings(data=SCENES, steps=3000, output=str(tmp_path)), 0)
    with open(path, "w", encoding="utf-8") as f:  # ... that stopped on its time budget: its budget is unknown
        json.dump({"val_miou": 0.5, "steps_run": 700, "stopped_by_time_budget": True}, f)
    for steps in (700, 1200):
        with pytest.raises(ConfigError, match=r"steps='unknown \(stopped on its time budget after 700 steps\)' "
                                              r"\(this sweep: [0-9]+\); no settings resume a run whose budget is unknown"):
            finished(row, SweepSettings(data=SCENES, steps=steps, output=str(tmp_path)), 0)


def test_a_sweep_continues_from_committed_results(tmp_path):
    """Runs listed in a committed results.json count as finished, with the same settings check;
    run folders on this machine take precedence."""
    from exfuse_keras.ablation.sweep import SweepSettings, budget_record, committed_runs, finished

    settings = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path / "new"),
                             committed=str(tmp_path / "results.json"))
    run = {"row": TABLE3[0].run_name, "seed": 1, "val_miou": 0.3, "settings": budget_record(settings)}
    (tmp_path / "results.json").write_text(json.dumps({"settings": {}, "rows": [], "runs": [run]}))
    committed = committed_runs(settings.committed)
    assert finished(TABLE3[0], settings, 1, committed)["val_miou"] == 0.3
    assert finished(TABLE3[0], settings, 0, committed) is None and finished(TABLE3[1], settings, 1, committed) is None
    other = SweepSettings(data=SCENES, steps=4000, output=str(tmp_path / "new"), committed=settings.committed)
    with pytest.raises(ConfigError, match=r"results.json \(row1_gcn_baseline, seed 1\) was trained with steps=1200"):
        finished(TABLE3[0], other, 1, committed)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="bad.json: not a sweep's results.json"):
        committed_runs(str(tmp_path / "bad.json"))
    # Several files (--committed twice): the union; the same run in both is fine, a different
    # score for it is refused naming both files.
    second = {"row": TABLE3[1].run_name, "seed": 0, "val_miou": 0.4, "settings": budget_record(settings)}
    (tmp_path / "more.json").write_text(json.dumps({"runs": [run, second]}))
    both = committed_runs([settings.committed, str(tmp_path / "more.json")])
    assert sorted(both) == [(TABLE3[0].run_name, 1), (TABLE3[1].run_name, 0)]
    assert both.sources[(TABLE3[1].run_name, 0)].endswith("more.json")
    several = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path / "new"),
                            committed=[settings.committed, str(tmp_path / "more.json")])
    assert finished(TABLE3[1], several, 0, both)["val_miou"] == 0.4
    from exfuse_keras.ablation.__main__ import parse_args
    assert parse_args(["--committed", "a.json", "--committed", "b.json"]).committed == ["a.json", "b.json"]
    (tmp_path / "other.json").write_text(json.dumps({"runs": [dict(run, val_miou=0.31)]}))
    with pytest.raises(ConfigError, match=r"other.json: row1_gcn_baseline seed 1 scored 0.31 there and 0.3 in .*results.json"):
        committed_runs([settings.committed, str(tmp_path / "other.json")])


def test_a_runs_design_is_its_method_not_its_budget_or_seed():
    """Rows 6 and 6-noBR differ by the DAP placement alone (their YAML files); the seed, the budget
    and the pretrained weights' path are not part of a design."""
    from exfuse_keras.ablation.rows import TABLE_DAP
    from exfuse_keras.ablation.sweep import SweepSettings, design_record, row_config

    settings = SweepSettings(data=SCENES, steps=1200)
    row6, no_br = (design_record(row_config(row, settings, 0)) for row in TABLE_DAP[1:3])
    assert {k for k in row6 if row6[k] != no_br[k]} == {"model.dap.placement"}
    assert (row6["model.dap.placement"], no_br["model.dap.placement"]) == ("upsampling_br", "upsampling")
    seed1 = row_config(TABLE_DAP[1], SweepSettings(data=SCENES, steps=4000), 1)
    assert seed1.train.seed == 1 and design_record(seed1) == row6
    assert not any(k.startswith(("train.seed", "train.epochs", "model.backbone.weights")) for k in row6)
    assert row6["model.backbone.blocks"] == [2, 2, 2, 2] and "train.ecre_target" not in row6  # no ECRE output


def test_a_weight_sweep_reuses_the_rows_that_setting_does_not_touch(tmp_path):
    """With ``--set train.ecre_loss_weight=0.1`` row 3 (no ECRE output) is still row 3: its committed
    runs at the default weight are reused; row 4's are another design and trained anew. A
    ``data.*`` override stays part of the budget."""
    from exfuse_keras.ablation.rows import TABLE_ECRE
    from exfuse_keras.ablation.sweep import SweepSettings, budget_record, committed_runs, finished

    default = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path / "w1"))
    runs = [{"row": row.run_name, "seed": 0, "val_miou": v, "settings": budget_record(default),
             "design": design} for row, v, design in
            ((TABLE_ECRE[0], 0.5, _design(TABLE_ECRE[0], default)), (TABLE_ECRE[1], 0.45, _design(TABLE_ECRE[1], default)))]
    runs += [{"row": row.run_name, "seed": 1, "val_miou": 0.4, "settings": budget_record(default)}  # no design record
             for row in TABLE_ECRE[:2]]
    (tmp_path / "results.json").write_text(json.dumps({"settings": {}, "rows": [], "runs": runs}))
    light = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path / "w01"), committed=str(tmp_path / "results.json"),
                          overrides=["train.ecre_loss_weight=0.1"])
    committed, said = committed_runs(light.committed), []
    assert finished(TABLE_ECRE[0], light, 0, committed, said.append)["val_miou"] == 0.5
    assert finished(TABLE_ECRE[1], light, 0, committed, said.append) is None
    assert said == [f"{tmp_path / 'results.json'} (row4_ecre, seed 0) is another design than row4_ecre.yaml now "
                    "(train.ecre_loss_weight=1.0 (now 0.1)): not reused"]
    assert "train.ecre_loss_weight" not in _design(TABLE_ECRE[0], light)
    assert finished(TABLE_ECRE[0], light, 1, committed)["val_miou"] == 0.4  # the overrides it recorded were []
    assert finished(TABLE_ECRE[1], light, 1, committed) is None
    # The weight-0.1 sweep's own results beside the weight-1 ones: both row 4 runs of seed 0 kept,
    # each found by the sweep of its design.
    light_run = {"row": TABLE_ECRE[1].run_name, "seed": 0, "val_miou": 0.49, "settings": budget_record(light),
                 "design": _design(TABLE_ECRE[1], light)}
    (tmp_path / "light.json").write_text(json.dumps({"settings": {}, "rows": [], "runs": [light_run]}))
    both = committed_runs([str(tmp_path / "results.json"), str(tmp_path / "light.json")])
    assert finished(TABLE_ECRE[1], light, 0, both)["val_miou"] == 0.49
    assert finished(TABLE_ECRE[1], dataclasses.replace(light, overrides=[]), 0, both)["val_miou"] == 0.45
    (tmp_path / "twice.json").write_text(json.dumps({"runs": [dict(light_run, val_miou=0.48)]}))
    with pytest.raises(ConfigError, match="row4_ecre seed 0 scored 0.48 there and 0.49 in .*light.json"):
        committed_runs([str(tmp_path / "light.json"), str(tmp_path / "twice.json")])
    other_data = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path / "crop"), committed=light.committed,
                               overrides=["data.crop_size=96"])
    with pytest.raises(ConfigError, match=r"overrides=\[\] \(this sweep: \['data.crop_size=96'\]\)"):
        finished(TABLE_ECRE[0], other_data, 0, committed_runs(light.committed))


def test_the_weight_row_reuses_weight_runs_committed_as_row_4_by_their_design_alone(tmp_path):
    """Row 4-w0.1 (its own config) finds the runs an earlier ``--set train.ecre_loss_weight=0.1``
    sweep committed under row 4's name, by their design record: row 4's weight-1 runs there are
    not taken for it, nor is a run under that name that recorded no design (it was row 4's
    config), nor one whose record lacks the key that tells the two configs apart; its own runs go to
    a folder of their own, and a reused run is renamed to the row that reuses it."""
    from exfuse_keras.ablation.rows import TABLE_ECRE
    from exfuse_keras.ablation.sweep import SweepSettings, budget_record, committed_runs, finished, run_dir

    ecre = {row.key: row for row in TABLE_ECRE}
    settings = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path / "out"))
    light = dataclasses.replace(settings, overrides=["train.ecre_loss_weight=0.1"])
    row4 = {"row": ecre["4"].run_name, "settings": budget_record(settings)}
    partial = {k: v for k, v in _design(ecre["4"], light).items() if k != "train.ecre_loss_weight"}
    runs = [dict(row4, seed=0, val_miou=0.45, design=_design(ecre["4"], settings)),
            dict(row4, seed=0, val_miou=0.49, design=_design(ecre["4"], light)),
            dict(row4, seed=1, val_miou=0.47),  # no design record: row 4 at weight 1
            dict(row4, seed=2, val_miou=0.44, design=partial)]  # a record without the weight
    (tmp_path / "results.json").write_text(json.dumps({"runs": runs}))
    committed, said = committed_runs(str(tmp_path / "results.json")), []
    assert _design(ecre["4-w0.1"], settings) == _design(ecre["4"], light)
    reused = finished(ecre["4-w0.1"], settings, 0, committed)
    assert (reused["val_miou"], reused["row"]) == (0.49, "ecre_loss_weight_0.1")  # listed under the row using it
    assert finished(ecre["4-w0.1*"], settings, 0, committed)["val_miou"] == 0.49
    assert finished(ecre["4"], settings, 0, committed)["val_miou"] == 0.45
    assert finished(ecre["4-w0.1"], settings, 1, committed, said.append) is None
    assert finished(ecre["4-w0.1"], settings, 2, committed, said.append) is None
    assert said == [f"{tmp_path / 'results.json'} (row4_ecre, seed 1) is another design than "
                    "ecre_loss_weight_0.1.yaml now (no design recorded for row4_ecre): not reused",
                    f"{tmp_path / 'results.json'} (row4_ecre, seed 2) is another design than "
                    "ecre_loss_weight_0.1.yaml now (train.ecre_loss_weight=not recorded (now 0.1)): not reused"]
    assert finished(ecre["4"], settings, 1, committed)["val_miou"] == 0.47
    assert run_dir(ecre["4-w0.1"], settings, 0) != run_dir(ecre["4"], settings, 0)
    # A report's results.json of the reused run is found again under the row's own name.
    (tmp_path / "report.json").write_text(json.dumps({"runs": [reused]}))
    assert finished(ecre["4-w0.1"], settings, 0, committed_runs(str(tmp_path / "report.json")))["val_miou"] == 0.49


def test_committed_runs_of_one_design_are_checked_against_each_other_and_the_sweep(tmp_path):
    """Two committed runs of one row, seed and design that scored differently are refused, not
    picked from; a run whose record lacks a key this sweep overrides is not reused (it may not
    have had it); a run recorded before idle settings were left out (row 3 with
    ``train.ecre_loss_weight: 1.0`` in its record) is still row 3 under weight 0.1; of two runs
    of one design, the one of this budget is taken."""
    from exfuse_keras.ablation.rows import TABLE_ECRE
    from exfuse_keras.ablation.sweep import SweepSettings, budget_record, committed_runs, finished

    settings = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path / "out"))
    row3 = {"row": TABLE_ECRE[0].run_name, "seed": 0, "settings": budget_record(settings)}
    files = {"a": [dict(row3, val_miou=0.5)], "b": [dict(row3, val_miou=0.6, design=_design(TABLE_ECRE[0], settings))]}
    for name, runs in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"runs": runs}))
    both = committed_runs([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    with pytest.raises(ConfigError, match=r"a.json \(row3_ss_lr, seed 0\) and .*b.json .* scored 0.5, 0.6"):
        finished(TABLE_ECRE[0], settings, 0, both)
    partial = dict(row3, val_miou=0.5, design={"model.dap.placement": "upsampling"})
    (tmp_path / "c.json").write_text(json.dumps({"runs": [partial]}))
    lr = dataclasses.replace(settings, overrides=["train.learning_rate=0.02"])
    said = []
    assert finished(TABLE_ECRE[0], lr, 0, committed_runs(str(tmp_path / "c.json")), said.append) is None
    assert "train.learning_rate=not recorded (now 0.02)" in said[0]
    old = dict(_design(TABLE_ECRE[0], settings), **{"train.ecre_loss_weight": 1.0, "train.ecre_target": "nearest"})
    (tmp_path / "d.json").write_text(json.dumps({"runs": [dict(row3, val_miou=0.5, design=old)]}))
    light = dataclasses.replace(settings, overrides=["train.ecre_loss_weight=0.1"])
    assert finished(TABLE_ECRE[0], light, 0, committed_runs(str(tmp_path / "d.json")))["val_miou"] == 0.5
    longer = dict(row3, val_miou=0.7, settings=budget_record(dataclasses.replace(settings, steps=4000)))
    (tmp_path / "e.json").write_text(json.dumps({"runs": [longer]}))
    two_budgets = committed_runs([str(tmp_path / "e.json"), str(tmp_path / "a.json")])
    assert finished(TABLE_ECRE[0], settings, 0, two_budgets)["val_miou"] == 0.5
    with pytest.raises(ConfigError, match="e.json .* was trained with steps=4000"):
        finished(TABLE_ECRE[0], settings, 0, committed_runs(str(tmp_path / "e.json")))


def test_curves_of_two_tables_keep_rows_of_one_key_apart():
    from exfuse_keras.ablation.rows import Row

    other = Row("3", "ecre", "another row 3", "ecre_soft_target.yaml", None, True)
    rows = rows_for("3")[:3] + (other,)
    assert list(report.curve_rows(rows)) == ["1", "2", "3", "3 (ECRE's loss)"]
    results = {(r.run_name, 0): {"val_miou_curve": [[1000, 0.1 * (i + 1)]]} for i, r in enumerate(rows)}
    assert report.mean_curves(rows, results, 1)["3 (ECRE's loss)"] == [(1000, pytest.approx(40.0))]


def _design(row, settings):
    from exfuse_keras.ablation.sweep import design_record, row_config
    return design_record(row_config(row, settings, 0))


def test_a_committed_run_of_another_design_is_trained_anew(tmp_path):
    """A committed run whose recorded design differs from its row's config now (the published
    Xeon sweep's rows 6-8 ran DAP in place of the final BR) is not reused; one without a design
    record, or with the same, is; a local run folder of another design is refused."""
    from exfuse_keras.ablation.sweep import SweepSettings, budget_record, committed_runs, finished, run_dir

    settings = SweepSettings(data=SCENES, steps=1200, output=str(tmp_path / "new"),
                             committed=str(tmp_path / "results.json"))
    old = {"model.dap.placement": "upsampling"}
    runs = [{"row": TABLE3[5].run_name, "seed": 0, "val_miou": 0.5, "settings": budget_record(settings), "design": old},
            {"row": TABLE3[5].run_name, "seed": 1, "val_miou": 0.6, "settings": budget_record(settings),
             "design": {"model.dap.placement": "upsampling_br", "model.some_future_key": 3}},
            {"row": TABLE3[4].run_name, "seed": 0, "val_miou": 0.4, "settings": budget_record(settings), "design": old}]
    (tmp_path / "results.json").write_text(json.dumps({"settings": {}, "rows": [], "runs": runs}))
    committed, said = committed_runs(settings.committed), []
    assert finished(TABLE3[5], settings, 0, committed, said.append) is None
    assert "another design than row6_seb_dap.yaml now (model.dap.placement='upsampling' (now 'upsampling_br'))" in said[0]
    assert finished(TABLE3[5], settings, 1, committed)["val_miou"] == 0.6
    assert finished(TABLE3[4], settings, 0, committed)["val_miou"] == 0.4  # row 5's placement is the default's
    directory = run_dir(TABLE3[5], settings, 0)
    os.makedirs(directory)
    with open(os.path.join(directory, "result.json"), "w", encoding="utf-8") as f:
        json.dump(runs[0], f)
    with pytest.raises(ConfigError, match="another design than row6_seb_dap.yaml now"):
        finished(TABLE3[5], settings, 0, committed)


def test_the_published_xeon_sweep_reuses_rows_1_to_5_and_table_4_and_retrains_rows_6_to_8(monkeypatch):
    from exfuse_keras.ablation.sweep import SweepSettings, committed_runs, finished

    monkeypatch.chdir(ROOT)

    path = os.path.join(ROOT, "docs", "results", "ablation4000_xeon.json")
    settings = SweepSettings(data="configs/data/scenes_128.yaml", steps=4000, seeds=2, output="unused", committed=path)
    committed = committed_runs(path)
    reused = {row.key for row in rows_for("all") if finished(row, settings, 0, committed) is not None}
    assert reused == {"1", "2", "3", "4", "5", "baseline", "deconv+sup", "subpixel", "ECRE"}


def test_the_published_verdict_table_is_what_the_committed_runs_regenerate(tmp_path, monkeypatch):
    """docs/ablation.md's verdict table, line for line, is the report of the committed results
    (the command the page names, run without training)."""
    from exfuse_keras.ablation.sweep import SweepSettings, run_sweep

    monkeypatch.chdir(ROOT)  # the page's command runs from the repository root

    committed = [os.path.join(ROOT, "docs", "results", name) for name in ("ablation4000_xeon.json",
                                                                          "ablation_ecre_xeon.json",
                                                                          "ablation4000_seed2_xeon.json",
                                                                          "ablation_rows67_xeon.json",
                                                                          "ablation_ecre_w01_xeon.json")]
    settings = SweepSettings(data="configs/data/scenes_128.yaml", steps=4000, seeds=3, output=str(tmp_path),
                             committed=committed)
    rows = rows_for("all,ecre")
    results = run_sweep(rows, settings, verbose=0, report_only=True)
    verdicts = report.format_verdicts(report.summarize(rows, results, 3)).splitlines()
    with open(os.path.join(ROOT, "docs", "ablation.md"), encoding="utf-8") as f:
        page = f.read().splitlines()
    first = page.index(verdicts[0])
    assert page[first:first + len(verdicts)] == verdicts
    assert any("#4-soft* − #4" in line for line in verdicts)
    assert any(line.startswith("| loss weight 0.1, against 1 | ECRE's loss: #4-w0.1* − #4 |") for line in verdicts)
    assert any(line.startswith("| DAP | #6 − #5 |") for line in verdicts)
    assert any(line.startswith("| ECRE (on #6) | #7 − #6 |") for line in verdicts)


def test_the_committed_rows_6_and_7_are_todays_design_on_every_seed(monkeypatch):
    """docs/results/ablation_rows67_xeon.json holds rows 6 and 7 as their configs build them now
    (DAP, then the final BR): a sweep continuing from it reuses all three seeds, where the first
    sweep's rows 6 and 7 (DAP in place of the BR) are trained anew."""
    from exfuse_keras.ablation.sweep import SweepSettings, committed_runs, finished

    monkeypatch.chdir(ROOT)
    path = os.path.join(ROOT, "docs", "results", "ablation_rows67_xeon.json")
    settings = SweepSettings(data="configs/data/scenes_128.yaml", steps=4000, seeds=3, output="unused", committed=path)
    committed = committed_runs(path)
    rows = {row.key: row for row in rows_for("3")}
    for key in ("6", "7"):
        for seed in range(3):
            assert finished(rows[key], settings, seed, committed) is not None, (key, seed)


def test_learning_curves_are_the_mean_over_seeds_at_common_steps(tmp_path):
    """Table 4's baseline shares row 3's runs and appears once; a run without a curve (a
    transcribed sweep) leaves its row out; a seed missing a validation point drops that step."""
    from PIL import Image

    rows = rows_for("ecre")
    curves = {0: [[1000, 0.20], [2000, 0.40], [3000, 0.45]], 1: [[1000, 0.30], [2000, 0.50]]}
    results = {(rows[0].run_name, s): {"val_miou_curve": c} for s, c in curves.items()}
    results[(rows[1].run_name, 0)] = {"val_miou": 0.4}
    results[(rows[2].run_name, 0)] = {"val_miou_curve": [[1000, 0.1], [2000, 0.6]]}
    got = report.mean_curves(rows + (TABLE4[0],), results, seeds=2)
    assert list(got) == ["3", "4-soft"]
    np.testing.assert_allclose(np.array(got["3"]), [[1000, np.mean([20, 30])], [2000, np.mean([40, 50])]])
    assert got["4-soft"] == [(1000, 10.0), (2000, 60.0)]
    assert report.plot_curves(str(tmp_path / "curves.png"), rows, results, seeds=2)
    image = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))
    for colour in report.CURVE_COLOURS[:2]:
        assert (image == colour).all(axis=-1).sum() > 100, colour
    assert not (image == report.CURVE_COLOURS[2]).all(axis=-1).any()
    assert not report.plot_curves(str(tmp_path / "none.png"), rows, {(rows[1].run_name, 0): {}}, seeds=1)
    assert not (tmp_path / "none.png").exists()


def test_the_charts_value_axis_has_round_gridlines(tmp_path, monkeypatch):
    assert report.value_ticks(60.0) == [0, 10, 20, 30, 40, 50, 60]
    assert report.value_ticks(10.0) == [0, 10]
    assert report.value_ticks(100.0) == [0, 20, 40, 60, 80, 100]
    assert report.value_ticks(90.0)[-1] == 90  # the top always has its line
    asked = []
    monkeypatch.setattr(report, "value_ticks", lambda high: asked.append(high) or [0.0, high])
    rows = rows_for("ecre")
    results = {(rows[0].run_name, 0): {"val_miou_curve": [[1000, 0.42], [2000, 0.55]]}}
    assert report.plot_curves(str(tmp_path / "curves.png"), rows, results, seeds=1)
    assert asked == [60.0]  # the curves chart takes its gridlines from value_ticks


def test_a_finished_pretraining_of_another_length_is_refused(tmp_path):
    from exfuse_keras.ablation.presence import pretrain_presence

    with open(tmp_path / "pretraining.json", "w", encoding="utf-8") as f:
        json.dump({"backbone": "backbone.keras", "seconds": 1.0, "loss": 0.1, "ss": [], "steps": 1000}, f)
    cfg = load_config(None, ["train.epochs=2", "train.steps_per_epoch=500"])
    assert pretrain_presence(cfg, str(tmp_path))["steps"] == 1000
    with pytest.raises(ConfigError, match="pretraining.json was pretrained for 1000 steps, not the 2000"):
        pretrain_presence(load_config(None, ["train.epochs=4", "train.steps_per_epoch=500"]), str(tmp_path))


def test_quick_sweep_writes_its_report_and_skips_finished_runs_on_rerun(tmp_path, capsys):
    command = [sys.executable, "-m", "exfuse_keras.ablation", "--quick", "--output", str(tmp_path)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    for name in ("results.json", "table.md", "ablation.png", "curves.png"):
        assert (tmp_path / name).is_file(), name
    # The tiny generated set was trained on, not a regenerated full one (scenes_128.yaml names a size).
    assert json.loads((tmp_path / "quick_data" / "scenes_meta.json").read_text())["args"]["num_train"] == 16
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["row"] for row in results["rows"]] == ["1", "7"]
    assert len(results["runs"]) == 2 and all(0.0 <= r["val_miou"] <= 1.0 for r in results["runs"])
    run = tmp_path / "runs" / "row7_exfuse" / "seed0"
    assert (run / "config.yaml").is_file() and (run / "result.json").is_file()
    # Each run's first line names the batch and crop it trains at, as its saved config has them.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    crop, batch = saved["data"]["crop_size"], saved["train"]["batch_size"]
    line = first.stdout.split("row7_exfuse seed 0: training (")[1].split("\n")[0]
    assert line.endswith(f"steps of batch {batch}, {crop} × {crop} crops)"), line
    assert (tmp_path / "pretraining" / "ss_2-2-2-2_seed0" / "backbone.keras").is_file()
    stamp = (run / "result.json").stat().st_mtime_ns
    # The reruns in process (they train nothing; a new TensorFlow start would cost more than they do).
    from exfuse_keras.ablation.__main__ import main as ablation_main

    capsys.readouterr()
    assert ablation_main(["--quick", "--output", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 2
    assert (run / "result.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == results["runs"]
    # Each run records its val confusion matrix: every val pixel once (4 images of 64², no void),
    # and the mIoU it gives (numpy, over the classes present or predicted) is the run's.
    matrix = np.array(json.loads((run / "result.json").read_text())["confusion_matrix"], np.float64)
    assert matrix.shape == (12, 12) and matrix.sum() == 4 * 64 * 64
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    result7 = json.loads((run / "result.json").read_text())
    assert np.mean(np.diag(matrix)[union > 0] / union[union > 0]) == pytest.approx(result7["val_miou"], abs=1e-9)
    # A run from before matrices were recorded gains it from its last.keras, the same one.
    del result7["confusion_matrix"]
    (run / "result.json").write_text(json.dumps(result7))
    assert ablation_main(["--quick", "--output", str(tmp_path), "--add-confusion"]) == 0
    assert "row7_exfuse seed 0: confusion matrix added" in capsys.readouterr().out
    assert np.array_equal(json.loads((run / "result.json").read_text())["confusion_matrix"], matrix)
    (run / "result.json").unlink()
    assert ablation_main(["--quick", "--output", str(tmp_path), "--report-only"]) == 0
    assert "not finished yet" in capsys.readouterr().out and not (run / "result.json").exists()
    assert [row["row"] for row in json.loads((tmp_path / "results.json").read_text())["rows"]] == ["1"]
    assert ablation_main(["--quick", "--output", str(tmp_path), "--report-only", "--rows", "7"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == []
    assert ablation_main(["--quick", "--output", str(tmp_path), "--report-only", "--rows", "1,9"]) == 2
    assert "--rows: no row 9 in --table all; its rows are 1, 7" in capsys.readouterr().err


def test_a_sweep_on_a_folder_dataset_measures_an_auto_crop_for_pretraining_training_and_cost(tmp_path, capsys):
    # data.crop_size: auto on the user's own folder of images: the run pretrains, trains, is scored
    # and has its FLOPs counted at the measured crop (the median shorter side, 110, down to a
    # multiple of 32: 96), and its first line says so; it used to fail in the pretraining, or with
    # --pretrain config after training, when the cost was counted at "auto".
    from PIL import Image

    import keras

    from exfuse_keras.ablation.__main__ import main as ablation_main
    from exfuse_keras.summary import count_flops

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    ids = [f"im{k}" for k in range(6)]
    for name in ids:
        Image.fromarray(rng.integers(0, 255, (110, 130, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(rng.integers(0, 2, (110, 130)).astype(np.uint8), mode="L").save(root / "masks" / f"{name}.png")
    (root / "train.txt").write_text("\n".join(ids[:4]))
    (root / "val.txt").write_text("\n".join(ids[4:]))
    data = tmp_path / "mine.yaml"
    data.write_text(yaml.safe_dump({"data": {"dataset": "folder", "root": str(root), "num_classes": 2,
                                             "class_names": ["bg", "fg"], "crop_size": "auto",
                                             "folder": {"train_list": "train.txt", "val_list": "val.txt"}}}))
    out = tmp_path / "sweep"
    argv = lambda output: ["--table", "3", "--rows", "2", "--config-set", "cpu", "--data", str(data),  # noqa: E731
                           "--seeds", "1", "--steps", "2", "--pretrain", "presence", "--pretrain-steps", "2",
                           "--output", str(output), "--set", "data.crop_size=auto", "--set", "train.batch_size=2",
                           "--set", "train.warmup_steps=1", "--set", "train.val_batch_size=2"]
    assert ablation_main(argv(out)) == 0, capsys.readouterr().err
    assert "row2_ss seed 0: training (2 steps of batch 2, 96 × 96 crops); data.crop_size: auto -> 96" \
        in capsys.readouterr().out
    run = out / "runs" / "row2_ss" / "seed0"
    result = json.loads((run / "result.json").read_text())
    assert result["eval_size"] == 96 and result["steps_run"] == 2 and result["pretraining_seconds"] > 0
    model = keras.models.load_model(run / "last.keras", compile=False)
    assert result["gflops"] == pytest.approx(sum(count_flops(model, 96, 96).values()) / 1e9)
    # A rerun reuses the finished run: the measured crop is not a design change.
    assert ablation_main(argv(out)) == 0
    assert "finished before, skipped" in capsys.readouterr().out
    # An image whose size cannot be read: one line naming it, before anything trains.
    (root / "images" / "im1.png").write_bytes(b"not a png")
    assert ablation_main(argv(tmp_path / "again")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "im1.png" in err and err.startswith("error: ")


def test_calibration_curve_matches_the_run_it_trained(tmp_path):
    """``python -m exfuse_keras.ablation.calibrate``: one point per --every steps, the last equal
    to evaluating the run's last weights on val; a --steps that --every does not divide is refused."""
    import keras

    import exfuse_keras.layers  # noqa: F401  (custom layers for loading)
    from exfuse_keras.ablation import calibrate
    from exfuse_keras.data.scenes import generate_scenes_dataset
    from exfuse_keras.evaluation.evaluate import evaluate

    root = tmp_path / "data"
    generate_scenes_dataset(str(root), num_train=16, num_val=4, size=64, verbose=False)
    sets = [f"data.root={root}", "data.synthetic.size=64", "data.synthetic.num_train=16", "data.synthetic.num_val=4",
            "data.crop_size=64", "data.shuffle_buffer=16", "train.warmup_steps=1",
            "train.val_batch_size=4", "model.backbone.blocks=[1,1,1,1]"]
    argv = ["--steps", "4", "--every", "2", "--pretrain-steps", "0", "--output", str(tmp_path / "out")]
    argv += [arg for s in sets for arg in ("--set", s)]
    assert calibrate.main(argv) == 0
    assert json.loads((root / "scenes_meta.json").read_text())["args"]["num_val"] == 4  # not regenerated
    record = json.loads((tmp_path / "out" / "curve.json").read_text())
    assert [p["steps"] for p in record["curve"]] == [2, 4] and record["pretraining_seconds"] == 0.0
    run = tmp_path / "out" / "run"
    cfg = load_config(str(run / "config.yaml"))
    model = keras.models.load_model(str(run / "last.keras"), compile=False)
    assert record["curve"][-1]["val_miou"] == pytest.approx(evaluate(cfg, model, "val", progress=False)["miou"],
                                                            abs=1e-4)
    assert calibrate.main(["--steps", "5", "--every", "2"]) == 2
    # Sizes are measured before anything trains: an auto crop on generated data is refused up front.
    assert calibrate.main([*argv, "--set", "data.crop_size=auto", "--output", str(tmp_path / "auto")]) == 2
    assert not (tmp_path / "auto" / "run").exists()


def test_context_by_size_renders_the_val_objects_again_and_scores_them(tmp_path):
    """by_size: the val scenes rendered again from the meta file's seed give the masks on disk
    (the matched variant too); a perfect prediction scores every object's own class, one that calls
    every nucleus a disc none of the nuclei; the bins' context accuracy against a hand count."""
    from exfuse_keras.ablation import by_size
    from exfuse_keras.data.scenes import SCENES_CLASSES, generate_scenes_dataset
    from exfuse_keras.data.synthetic import load_pairs

    names = list(SCENES_CLASSES)
    for variant in ("independent", "matched"):
        meta = generate_scenes_dataset(tmp_path / variant, num_train=1, num_val=6, size=96, verbose=False,
                                       look_alike_sizes=variant)
        for k, (_, mask) in enumerate(load_pairs(tmp_path / variant, "val")):
            np.testing.assert_array_equal(by_size.scene_objects(meta, k)[1], mask)
    counted = []
    for k, (_, mask) in enumerate(load_pairs(tmp_path / "matched", "val")):
        objects, rendered = by_size.scene_objects(meta, k)
        np.testing.assert_array_equal(rendered, mask)
        for name, radius, visible in objects:
            assert (mask[visible] == names.index(name)).all() and 0 < radius < 96
        perfect = by_size.object_counts(mask, objects, names)
        assert [c[2] for c in perfect] == [int(v.sum()) for _, _, v in objects] and all(c[3] == 0 for c in perfect)
        swapped = np.where(mask == names.index("nucleus"), names.index("disc"), mask)
        for (name, _, visible), c in zip(objects, by_size.object_counts(swapped, objects, names)):
            assert (c[2], c[3]) == ((0, int(visible.sum())) if name == "nucleus" else (int(visible.sum()), 0))
        counted += objects
    assert {name for name, _, _ in counted} >= {"nucleus", "disc"}

    # Hand counts: the first bin (0-5.76 px at 96²) holds a nucleus/disc pair (3 objects each) and
    # 3 boxed objects but 1 square, a pair short of objects; the last boxed object is in 19.2-96 px.
    counts = [("nucleus", 4.0, 30, 10), ("nucleus", 5.0, 10, 10), ("nucleus", 5.5, 0, 0), ("disc", 3.0, 8, 2),
              ("disc", 4.5, 2, 8), ("disc", 5.7, 5, 5), ("square", 4.0, 9, 1), ("boxed", 1.0, 3, 7),
              ("boxed", 2.0, 3, 7), ("boxed", 3.0, 3, 7), ("boxed", 25.0, 1, 1)]
    bins = by_size.context_by_size(counts, 96, min_objects=3)
    first = bins[0]
    assert first["bin"] == pytest.approx([0.0, 0.06 * 96])
    assert first["objects"] == {"nucleus": 3, "boxed": 3, "disc": 3, "square": 1}
    assert first["pairs"] == ["nucleus"]
    assert first["context accuracy"] == pytest.approx(np.mean([40 / 60, 15 / 30]))  # boxed/square: no pair
    assert bins[-1]["bin"] == pytest.approx([0.2 * 96, 96.0]) and bins[-1]["objects"]["boxed"] == 1
    assert all(b["context accuracy"] is None and b["pairs"] == [] for b in bins[1:])
    table = by_size.format_table({"1": [{"seed": 0, "by_size": bins}], "1-blind": [{"seed": 0, "by_size": bins}]})
    assert f"| 0–6 | 3 / 3 / 3 / 1 | nucleus | {100 * first['context accuracy']:.1f} (" in table


def test_round_ticks_cover_the_range_with_at_most_nine():
    assert report._ticks(17.4) == [-15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0]
    assert report._ticks(3.3) == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert report._ticks(0.9) == pytest.approx([-0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8])


def test_the_increment_plot_whiskers_are_the_verdicts_pooled_interval_and_the_thin_line_the_own(tmp_path):
    """Black whiskers span the pooled interval (the verdict's), the thin grey line the row's own;
    their lengths in pixels are in the ratio of the two intervals' widths."""
    from PIL import Image

    delta = report.paired_increment([0.02, 0.05, -0.01], pooled=(0.01, 12))
    assert delta["pooled_ci"] is not None and delta["ci"] is not None
    summary = [{"table": "3", "row": "2", "delta_vs": "1", "claim": "SS", "label": "+ SS", "paper_delta": 1.5,
                "delta_miou": delta}]
    report.plot_deltas(str(tmp_path / "p.png"), summary)
    image = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).astype(int)
    top, left, right = 48, 280, 800  # the first band's top and the plot's columns (plot_deltas' layout)
    plot = image[:, left:right]
    black = left + np.nonzero((plot[top + 13] == 0).all(axis=-1))[0]
    grey = left + np.nonzero((plot[top + 22] == 150).all(axis=-1))[0]
    blue = left + np.nonzero((plot[top + 10] == (49, 110, 180)).all(axis=-1))[0]
    pooled_width = delta["pooled_ci"][1] - delta["pooled_ci"][0]
    own_width = delta["ci"][1] - delta["ci"][0]
    assert own_width > 2 * pooled_width and delta["mean"] > 0
    assert (black.max() - black.min()) / (grey.max() - grey.min()) == pytest.approx(pooled_width / own_width, rel=0.05)
    # Both intervals are centred on the mean: the blue bar's far end (it starts at 0).
    assert (black.max() + black.min()) / 2 == pytest.approx(blue.max(), abs=2)
    assert (grey.max() + grey.min()) / 2 == pytest.approx(blue.max(), abs=2)


# Budgets: does the order hold at a longer budget? ------------------------------------------------

def test_late_gain_is_the_last_intervals_rise():
    from exfuse_keras.ablation import budgets
    from exfuse_keras.ablation.budgets import late_gain

    assert late_gain({"val_miou_curve": [[2000, 0.30], [8000, 0.50], [6000, 0.44], [4000, 0.40]]}) == \
        pytest.approx(0.50 - 0.44)
    assert budgets.last_interval({"val_miou_curve": [[2000, 0.30], [8000, 0.50], [6000, 0.44]]}) == 2000
    # A resumed run's CSV may log a step twice: it counts once, with its last value.
    assert late_gain({"val_miou_curve": [[2000, 0.3], [4000, 0.5], [4000, 0.6]]}) == pytest.approx(0.3)
    assert late_gain({"val_miou_curve": [[1000, 0.3], [1000, 0.3]]}) is None
    assert late_gain({}) is None


def _budget_runs(settings, scores, curves):
    """Committed runs of rows 3, 4, 5 and 7 at ``settings``' budget: ``scores[key][seed]``."""
    from exfuse_keras.ablation.sweep import budget_record

    rows = {row.key: row for row in rows_for("3")}
    return [{"row": rows[key].run_name, "seed": seed, "modules": key, "val_miou": value,
             "val_boundary_miou": value / 2, "cpu": {"kind": "Intel Emerald Rapids"},
             "val_miou_curve": curves(value), "settings": budget_record(settings),
             "design": _design(rows[key], settings)}
            for key, values in scores.items() for seed, value in enumerate(values)]


def test_budgets_set_the_same_rows_and_seeds_side_by_side(tmp_path, monkeypatch, capsys):
    """The budgets report takes each budget's runs from the committed files (another budget's run
    of the same row and seed is not mixed in), pairs the later budget with the first by seed,
    compares row 7 with row 5 on request, and orders the rows per budget and per seed; checked
    against numpy on hand-made scores."""
    from PIL import Image

    from exfuse_keras.ablation import budgets
    from exfuse_keras.ablation.sweep import SweepSettings

    monkeypatch.chdir(ROOT)
    data = "configs/data/scenes_128.yaml"
    short, long = (SweepSettings(data=data, steps=s, seeds=2, output="unused") for s in (4000, 8000))
    four = {"3": [0.40, 0.42], "4": [0.37, 0.38], "5": [0.41, 0.43], "7": [0.35, 0.39]}
    eight = {"3": [0.50, 0.53], "4": [0.51, 0.50], "5": [0.52, 0.55], "7": [0.49, 0.51]}
    files = []
    for name, settings, scores, every in (("a.json", short, four, 1000), ("b.json", long, eight, 2000)):
        runs = _budget_runs(settings, scores, lambda v, e=every, n=settings.steps: [[s, v - 0.01 * (n - s) / e]
                                                                                     for s in range(e, n + 1, e)])
        (tmp_path / name).write_text(json.dumps({"settings": {}, "rows": [], "runs": runs}))
        files += ["--committed", str(tmp_path / name)]
    out = tmp_path / "out"
    assert budgets.main(["--rows", "3,4,5,7", "--compare", "7-5", "--budgets", "8000,4000", "--data", data,
                         *files, "--output", str(out)]) == 0
    md = (out / "budgets.md").read_text()
    lines = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    # Row 5: 42.00 ± 1.41 then 53.50 ± 2.12; the change paired by seed, t with 1 df.
    change = np.array(eight["5"]) - np.array(four["5"])
    half = 12.706 * change.std(ddof=1) / np.sqrt(2)
    assert f"| {100 * change.mean():+.2f} [{100 * (change.mean() - half):+.1f}, {100 * (change.mean() + half):+.1f}]" \
        in lines["| 5"]
    assert "| 42.00 ± 1.41 | 53.50 ± 2.12 |" in lines["| 5"]
    # The rise over the last validation interval: 1 point at both budgets.
    assert lines["| 5"].endswith("| +1.00 | +1.00 |")
    # Row 7 against row 5 at 8,000: pooled sd over the three comparisons (1 df each).
    d = {k: np.array(eight[k]) - np.array(eight[r]) for k, r in (("4", "3"), ("5", "3"), ("7", "5"))}
    pooled = np.sqrt(sum(v.var(ddof=1) for v in d.values()) / 3)
    from scipy import stats
    half = stats.t.ppf(0.975, 3) * pooled / np.sqrt(2)
    row7 = next(line for line in md.splitlines() if line.startswith("| DAP and ECRE (on #5) | #7 − #5 |"))
    assert f"{100 * d['7'].mean():+.2f} [{100 * (d['7'].mean() - half):+.1f}, {100 * (d['7'].mean() + half):+.1f}]" \
        in row7
    assert f"8,000: sd {100 * pooled:.2f}, 3 df" in md
    # The order, by mean and per seed.
    assert "| 4,000 steps | #5 > #3 > #4 > #7 | #5 > #3 > #4 > #7 | #5 > #3 > #7 > #4 |" in md
    assert "| 8,000 steps | #5 > #3 > #4 > #7 | #5 > #4 > #3 > #7 | #5 > #3 > #7 > #4 |" in md
    image = np.asarray(Image.open(out / "budgets.png").convert("RGB"))
    for colour in report.CURVE_COLOURS[:4]:
        assert (image == colour).all(axis=-1).sum() > 200, colour
    # A budget no file holds, a bad pair or budget list: one clear line each.
    capsys.readouterr()
    for args, said in ((["--rows", "3,4", "--budgets", "4000,6000"], "no run of 6,000 steps"),
                       (["--rows", "3,4", "--budgets", "4000"], "--budgets 4000: expected two or more"),
                       (["--rows", "3,5", "--compare", "5-", "--budgets", "4000,8000"], "--compare 5-: expected A-B"),
                       (["--rows", "3,4,5", "--compare", "5-4", "--budgets", "4000,8000"],
                        "--compare 5-4: row 5 is already compared with #3")):
        assert budgets.main([*args, "--data", data, *files, "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err


def test_budgets_show_a_run_missing_at_one_budget_as_missing(tmp_path, monkeypatch):
    """A row whose later-budget run has not finished (the sweep still running) keeps the report
    going: the change rests on the seeds both budgets have, and that seed's order is left out."""
    from exfuse_keras.ablation import budgets
    from exfuse_keras.ablation.sweep import SweepSettings

    monkeypatch.chdir(ROOT)
    data = "configs/data/scenes_128.yaml"
    short, long = (SweepSettings(data=data, steps=s, seeds=2, output="unused") for s in (4000, 8000))
    runs = _budget_runs(short, {"3": [0.40, 0.42], "4": [0.37, 0.38]}, lambda v: [[2000, v - 0.1], [4000, v]])
    runs += _budget_runs(long, {"3": [0.50, 0.53], "4": [0.51]}, lambda v: [[4000, v - 0.1], [8000, v]])
    (tmp_path / "r.json").write_text(json.dumps({"settings": {}, "rows": [], "runs": runs}))
    out = tmp_path / "out"
    assert budgets.main(["--rows", "3,4", "--budgets", "4000,8000", "--data", data, "--committed",
                         str(tmp_path / "r.json"), "--output", str(out)]) == 0
    md = (out / "budgets.md").read_text()
    row4 = next(line for line in md.splitlines() if line.startswith("| 4 |"))
    assert "| 51.00 (1 seed) | +14.00 (seed 0) | +10.00 | +10.00 |" in row4
    assert "| 8,000 steps | #4 > #3 | #4 > #3 | – |" in md
    assert "rise, last 2,000 steps of 4,000" in md and "rise, last 4,000 steps of 8,000" in md
    assert "val mIoU, 4,000 (seeds 0, 1)" in md and "val mIoU, 8,000 (seeds 0, 1)" in md


def test_rankings_mark_ties_and_comparisons_name_the_modules_that_differ():
    from exfuse_keras.ablation import budgets

    assert budgets._ranking({"3": 0.4, "5": 0.5, "4": 0.4}) == "#5 > #3 = #4"
    given = tuple(row for row in rows_for("3") if row.key in ("4", "5", "7"))
    rows = budgets.with_comparisons(given, ["7-5", "4-5"])
    by_key = {row.key: row for row in rows}
    assert (by_key["7"].reference, by_key["7"].claim) == ("5", "DAP and ECRE (on #5)")
    assert by_key["4"].claim == "ECRE, without SEB (on #5)"
    assert by_key["5"].reference == "3"  # untouched (its reference is not given: no comparison)
    with pytest.raises(ValueError, match="row 7 is already compared with #5"):
        budgets.with_comparisons(given, ["7-5", "7-4"])
    with pytest.raises(ValueError, match="row 7 is already compared with #6"):
        budgets.with_comparisons(rows_for("3"), ["7-5"])


def test_the_published_budget_tables_are_what_the_committed_runs_regenerate(tmp_path, monkeypatch):
    """docs/ablation.md's tables at 4,000 and 8,000 steps, line for line, are the budgets report of
    the committed results (the command the page names), and the chart on the page is that report's."""
    from PIL import Image

    from exfuse_keras.ablation import budgets

    monkeypatch.chdir(ROOT)
    with open(os.path.join(ROOT, "docs", "ablation.md"), encoding="utf-8") as f:
        page = f.read()
    block = next(b.split("```")[0] for b in page.split("```bash")[1:] if "exfuse_keras.ablation.budgets" in b)
    command = next(c for c in block.replace("\\\n", " ").splitlines() if "exfuse_keras.ablation.budgets" in c)
    args = command.split("exfuse_keras.ablation.budgets", 1)[1].split()
    args = args[:args.index("--output")] + ["--output", str(tmp_path)]
    assert budgets.main(args) == 0
    lines = (tmp_path / "budgets.md").read_text(encoding="utf-8").rstrip("\n").splitlines()
    page_lines = page.splitlines()
    first = page_lines.index(lines[0])
    assert page_lines[first:first + len(lines)] == lines
    image = np.asarray(Image.open(tmp_path / "budgets.png").convert("RGB"))
    published = np.asarray(Image.open(os.path.join(ROOT, "docs", "ablation_budgets.png")).convert("RGB"))
    assert image.shape == published.shape
    # The curves, colour by colour (text rendering may differ between Pillow versions; lines barely).
    for colour in report.CURVE_COLOURS[:4]:
        a, b = (image == colour).all(axis=-1), (published == colour).all(axis=-1)
        assert a.sum() > 100 and (a & b).sum() / (a | b).sum() > 0.98, colour


def test_budget_chart_marks_the_final_score_of_runs_without_a_curve(tmp_path):
    """An older sweep's runs recorded no curve: the chart still shows their mean final score, as a
    ring of the row's colour at that budget's step and score."""
    from PIL import Image

    from exfuse_keras.ablation import budgets

    rows = tuple(row for row in rows_for("3") if row.key in ("3", "5"))
    short = {(rows[1].run_name, s): {"val_miou": v} for s, v in enumerate((0.40, 0.50))}
    long = {(row.run_name, 0): {"val_miou": 0.6, "val_miou_curve": [[4000, 0.3], [8000, 0.6]]} for row in rows}
    assert budgets.plot_budgets(str(tmp_path / "b.png"), rows, {4000: short, 8000: long}, seeds=2)
    image = np.asarray(Image.open(tmp_path / "b.png").convert("RGB"))
    # The chart's geometry (plot_budgets): plot from x=60, 560 wide; y from 40, 320 high, 0-60 on the axis.
    x, y = 60 + 560 * 4000 / 8000, 40 + 320 * (1 - 45 / 60)
    window = image[int(y) - 6:int(y) + 7, int(x) - 6:int(x) + 7]
    assert (window == report.CURVE_COLOURS[1]).all(axis=-1).sum() >= 8
    assert (window[6, 6] == 255).all()  # hollow
