"""The sweep's outputs: results.json, table.md, a plot of each module's increment next to the
paper's, and the rows' learning curves.

Each row's claim is an increment over the row the paper compares it with (``Row.reference``:
SS = #2 - #1, LR = #3 - #2, ECRE = #4 - #3, SEB = #5 - #3, DAP = #6 - #5, ECRE again =
#7 - #6; Table 4's rows against its baseline). The increment is paired by seed: every seed's
difference is the row's val mIoU minus the reference's with the same seed (same data order and
pretraining), and two runs are paired only when they ran on the same kind of CPU
(``exfuse_keras.machine``). Over the n pairs:

- the mean increment and two 95% confidence intervals: mean +- t(0.975, n - 1) * sd / sqrt(n)
  with the row's own sample sd of the differences (nothing assumed about other rows, but with
  2 or 3 seeds that sd is itself a guess: one spread of 0.06 gave SS an interval of +-0.6), and
  mean +- t(0.975, df) * sd_pool / sqrt(n) with the pooled sd below (the seed-to-seed noise
  taken as one for every comparison of the benchmark: the verdict's interval);
- the smallest effect the design detects: the true increment that a two-sided paired t-test at
  alpha = 0.05 finds with 80% power, (t(0.975, df) + t(0.8, df)) * sd_pool / sqrt(n), with
  sd_pool the pooled sd of the paired differences of all the paper's rows given (df = sum of
  n_i - 1; experimental rows are left out of the pool);
- a verdict: ``helps`` or ``hurts`` when the pooled interval excludes 0, else ``inconclusive at
  +- h`` (h its half-width); the row's own interval when no pool exists. One pair gives no
  verdict. An experimental row's verdict needs both intervals, pooled and own, to exclude 0
  (its noise need not be the benchmark's: row 8 diverged on one seed; and with 2 seeds its own
  sd alone can call two differences 0.2 apart significant).

Several tables in one report (``--table all,ecre``) share one pool, so a screen of experimental
rows is judged with the whole sweep's noise estimate.
"""

from __future__ import annotations

import json
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CONFIDENCE, POWER = 0.95, 0.80


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[Optional[float], int]:
    """(pooled sample sd, degrees of freedom) of several groups of paired differences: the
    square root of sum((n_i - 1) s_i^2) / sum(n_i - 1); (None, 0) when no group has 2 values."""
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df == 0:
        return None, 0
    ss = sum(float(np.sum((np.asarray(g, np.float64) - np.mean(g)) ** 2)) for g in groups if len(g) > 1)
    return math.sqrt(ss / df), df


def detectable_effect(sd: Optional[float], df: int, n: int) -> Optional[float]:
    """The true mean difference a two-sided paired t-test (alpha 0.05) detects with 80% power from
    n pairs, for differences of sd ``sd`` estimated with ``df`` degrees of freedom."""
    from scipy import stats

    if sd is None or df < 1 or n < 1:
        return None
    return float((stats.t.ppf(1 - (1 - CONFIDENCE) / 2, df) + stats.t.ppf(POWER, df)) * sd / math.sqrt(n))


def paired_increment(deltas, pooled: tuple = (None, 0), both: bool = False) -> dict:
    """The statistics of one increment from its paired per-seed differences (module docstring).

    Returns ``{"n", "mean", "std", "ci": [low, high] or None, "half_width", "pooled_ci",
    "pooled_half_width", "pooled_sd", "pooled_df", "p", "mde", "verdict"}``; ``p`` is the two-sided
    paired t-test's (None below 2 pairs), ``mde`` the detectable effect with ``pooled`` =
    ``pooled_sd(...)``, whose sd and degrees of freedom ``pooled_sd`` and ``pooled_df`` repeat.
    ``both``: the verdict needs both intervals, pooled and own, to exclude 0 (an experimental
    row's).
    """
    from scipy import stats

    deltas = np.asarray(deltas, np.float64)
    n = len(deltas)
    mean, std = _mean_std(deltas) if n else (float("nan"), 0.0)
    result = {"n": n, "mean": mean, "std": std, "ci": None, "half_width": None, "pooled_ci": None,
              "pooled_half_width": None, "pooled_sd": pooled[0], "pooled_df": pooled[1], "p": None,
              "mde": detectable_effect(pooled[0], pooled[1], n),
              "verdict": "not measured" if n == 0 else "one seed: not resolved"}
    if n < 2:
        return result
    quantile = 1 - (1 - CONFIDENCE) / 2
    if pooled[0] is not None and pooled[1] >= 1:
        pooled_half = float(stats.t.ppf(quantile, pooled[1]) * pooled[0] / math.sqrt(n))
        result.update(pooled_ci=[mean - pooled_half, mean + pooled_half], pooled_half_width=pooled_half)
    half = float(stats.t.ppf(quantile, n - 1) * std / math.sqrt(n))
    result.update(ci=[mean - half, mean + half], half_width=half)
    result["p"] = float(stats.ttest_1samp(deltas, 0.0).pvalue) if std > 0 else (0.0 if mean != 0 else 1.0)
    bases = [ci for ci in (result["pooled_ci"], result["ci"]) if ci is not None]
    bases = bases if both else bases[:1]
    if all(low > 0 for low, _ in bases):
        result["verdict"] = "helps"
    elif all(high < 0 for _, high in bases):
        result["verdict"] = "hurts"
    else:
        result["verdict"] = f"inconclusive at ± {100 * max(high - low for low, high in bases) / 2:.1f}"
    return result


def cpu_kind(run: dict) -> str:
    return (run.get("cpu") or {}).get("kind", "not recorded")


def _pairs(results: dict, row, reference, seeds: int, key: str) -> list:
    """Per-seed differences ``key`` of row minus reference, for seeds both ran on one CPU kind."""
    out = []
    for s in range(seeds):
        a, b = results.get((row.run_name, s)), results.get((reference.run_name, s))
        if a is not None and b is not None and cpu_kind(a) == cpu_kind(b) and a.get(key) is not None \
                and b.get(key) is not None:
            out.append(a[key] - b[key])
    return out


# The positive controls' class groups (the scenes benchmark's, exfuse_keras/data/scenes.py): the
# context control should cost the first and not the second, the resolution control the third.
# The distances that decide a context class and its look-alike overlap on scenes (a nucleus's
# pixels are a background gap farther from their ring than a disc's from its outline), so a
# window-limited model loses on both: the contrast of a group with the look-alikes is the
# control's specific cost.
CONTROL_GROUPS = {"context (nucleus, boxed)": ("nucleus", "boxed"),
                  "their look-alikes (disc, square)": ("disc", "square"),
                  "thin (wheel, wire, grid)": ("wheel", "wire", "grid")}
CONTROL_CONTRASTS = {"context − look-alikes": ("context (nucleus, boxed)", "their look-alikes (disc, square)"),
                     "thin − look-alikes": ("thin (wheel, wire, grid)", "their look-alikes (disc, square)")}


def class_group_score(run: dict, class_names: Sequence[str], group: Sequence[str]) -> Optional[float]:
    """The mean IoU of a run over the classes of ``group`` (those it scored), or None."""
    iou = run.get("per_class_iou") or []
    values = [iou[class_names.index(c)] for c in group if c in class_names and class_names.index(c) < len(iou)]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# What a context-blind model cannot do, read from the confusion matrix rather than from IoU: a
# nucleus pixel called a disc (or back) is an error only the outline around it can avoid, a
# nucleus pixel called a square an error of shape. Shape and context errors both lower IoU, so
# IoU cannot tell a model that lost context from one that lost shape; these two can.
PAIR_ACCURACIES = ("context accuracy", "shape accuracy")
PAIR_CONTRAST = "context − shape accuracy"


def pair_accuracies(confusion, class_names: Sequence[str]) -> Optional[dict]:
    """How well a model tells each context class from its look-alike, and both from the other shape.

    Over the four classes of ``scenes.LOOK_ALIKES`` (nucleus and disc, boxed and square), each
    class weighted equally, from the confusion matrix (rows = ground truth):

    - context accuracy: of a class's pixels called its own class or its pair's other member, the
      share called its own class (a chance guess between the two scores 0.5);
    - shape accuracy: of its pixels called any of the four classes, the share called a member of
      its own pair (a disc or nucleus pixel called disc or nucleus, not square or boxed).

    A model that lost context and kept shape loses context accuracy only; one that lost shape
    loses both. None when the four classes are not all among ``class_names``, or when one of
    them has no pixel called itself or its look-alike (its context accuracy is undefined: then
    the run has no pair accuracies, and the report pairs fewer seeds, as its n says).
    """
    from exfuse_keras.data.scenes import PAIR_PARTNER

    pairs = list(PAIR_PARTNER.items())
    if confusion is None or not all(c in class_names for pair in pairs for c in pair):
        return None
    matrix = np.asarray(confusion, dtype=np.float64)
    index = {c: class_names.index(c) for pair in pairs for c in pair}
    four = [index[c] for c in index]
    context, shape = [], []
    for own, partner in pairs:
        row = matrix[index[own]]
        in_pair, in_four = row[index[own]] + row[index[partner]], row[four].sum()
        if in_pair == 0:
            return None
        context.append(row[index[own]] / in_pair)
        shape.append(in_pair / in_four)
    return {"context accuracy": float(np.mean(context)), "shape accuracy": float(np.mean(shape))}


def _control_groups(row, reference, results: dict, seeds: int, class_names: list) -> dict:
    """``{group or contrast: paired_increment}`` of a control over its reference (own sd): the
    ``CONTROL_GROUPS``' mean IoU and their contrasts, and where the runs recorded a confusion
    matrix the ``PAIR_ACCURACIES`` and their contrast."""
    if not all(c in class_names for members in CONTROL_GROUPS.values() for c in members):
        return {}

    def scores(run):
        out = {g: class_group_score(run, class_names, members) for g, members in CONTROL_GROUPS.items()}
        for name, (a, b) in CONTROL_CONTRASTS.items():
            out[name] = None if out[a] is None or out[b] is None else out[a] - out[b]
        accuracies = pair_accuracies(run.get("confusion_matrix"), class_names) or dict.fromkeys(PAIR_ACCURACIES)
        out.update(accuracies)
        out[PAIR_CONTRAST] = (None if None in accuracies.values()
                              else accuracies["context accuracy"] - accuracies["shape accuracy"])
        return out

    scored = {key: {**run, **scores(run)} for key, run in results.items()}  # the run's CPU kind pairs them
    measures = [*CONTROL_GROUPS, *CONTROL_CONTRASTS, *PAIR_ACCURACIES, PAIR_CONTRAST]
    increments = {g: paired_increment(_pairs(scored, row, reference, seeds, g)) for g in measures}
    # Runs from before confusion matrices were recorded have no pair accuracies: left out, not "0 seeds".
    return {g: d for g, d in increments.items() if d["n"] or g not in (*PAIR_ACCURACIES, PAIR_CONTRAST)}


def summarize(rows: Sequence, results: dict, seeds: int, class_names: Optional[Sequence[str]] = None) -> list[dict]:
    """One dict per row with runs: modules, cost, scores over seeds, and its increment over its
    reference row (``paired_increment``, the detectable effect pooled over all the rows given).
    Every compared row (a module's increment, or a positive control against row 1) also gets
    ``class_groups``: the paired increment of each ``CONTROL_GROUPS`` group's mean IoU and their
    contrasts (own sd), when ``class_names`` holds the groups: where a module's gain comes from."""
    by_key = {(r.table, r.key): r for r in rows}
    # Keyed by (table, key): "3" is a row of Table 3 and of the ECRE screen.
    references = {(r.table, r.key): by_key.get((r.table, r.reference)) for r in rows if r.reference}
    # Pooled over the paper's rows: an experimental row (row 8 diverged on one seed) says nothing of
    # the noise of the others.
    # A comparison that two tables share (Table 4's ECRE row is Table 3's #4 - #3) counts once.
    pooled_rows, compared = [], set()
    for r in rows:
        reference = references.get((r.table, r.key))
        if reference is not None and not r.experimental:
            if (r.run_name, reference.run_name) not in compared:
                compared.add((r.run_name, reference.run_name))
                pooled_rows.append(r)
    pooled = pooled_sd([_pairs(results, r, references[(r.table, r.key)], seeds, "val_miou") for r in pooled_rows])
    pooled_boundary = pooled_sd([_pairs(results, r, references[(r.table, r.key)], seeds, "val_boundary_miou")
                                 for r in pooled_rows])
    summary = []
    for row in rows:
        runs = [results[(row.run_name, s)] for s in range(seeds) if (row.run_name, s) in results]
        if not runs:
            continue
        reference = references.get((row.table, row.key))
        miou, miou_std = _mean_std([r["val_miou"] for r in runs])
        boundary = [r.get("val_boundary_miou") for r in runs]
        biou, biou_std = _mean_std(boundary) if None not in boundary else (None, None)
        paper_delta = None
        if reference is not None and row.paper_miou is not None and reference.paper_miou is not None:
            paper_delta = round(row.paper_miou - reference.paper_miou, 1)
        delta = delta_boundary = None
        if reference is not None:
            delta = paired_increment(_pairs(results, row, reference, seeds, "val_miou"), pooled,
                                     both=row.experimental)
            delta_boundary = paired_increment(_pairs(results, row, reference, seeds, "val_boundary_miou"),
                                              pooled_boundary, both=row.experimental)
        summary.append({
            "table": row.table, "row": row.key, "label": row.label, "config": row.config, "claim": row.claim,
            "modules": runs[0].get("modules", "?"), "experimental": row.experimental,
            "ss_pretraining": row.ss_pretraining, "params": runs[0].get("params"), "gflops": runs[0].get("gflops"),
            "eval_size": runs[0].get("eval_size"),
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])) if all(
                r.get("train_seconds") is not None for r in runs) else None,
            "seeds": [r["seed"] for r in runs], "cpu": sorted({cpu_kind(r) for r in runs}),
            "val_miou": [r["val_miou"] for r in runs], "val_miou_mean": miou, "val_miou_std": miou_std,
            "boundary_miou": boundary, "boundary_miou_mean": biou, "boundary_miou_std": biou_std,
            "delta_vs": reference.key if reference is not None else None,
            "delta_miou": delta, "delta_boundary_miou": delta_boundary,
            "paper_miou": row.paper_miou, "paper_delta": paper_delta,
        })
        if reference is not None and class_names:
            summary[-1]["class_groups"] = _control_groups(row, reference, results, seeds, list(class_names))
    return summary


def spread(mean: Optional[float], std: float, n: int, sign: str = "") -> str:
    """``mean ± std`` in points (x100), or ``mean (1 seed)``: one value has no spread."""
    if mean is None:
        return "–"
    if n > 1:
        return f"{100 * mean:{sign}.2f} ± {100 * std:.2f}"
    return f"{100 * mean:{sign}.2f} (1 seed)"


def _interval(ci) -> str:
    return "–" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def format_increment(d: dict, which: str = "ci") -> str:
    """``+3.10 [-1.2, +7.4]`` in points (the interval ``which``: ``ci`` or ``pooled_ci``), or
    ``+3.10 (1 seed)``."""
    if d["n"] == 0:
        return "–"
    if d[which] is None:
        return f"{100 * d['mean']:+.2f} (1 seed)"
    return f"{100 * d['mean']:+.2f} {_interval(d[which])}"


TABLE_TITLES = {"3": "Table 3", "4": "Table 4", "dap": "Where DAP's votes come from", "ecre": "ECRE's loss",
                "controls": "Positive controls"}


def row_name(key) -> str:
    """A row as the tables name it: Table 3's numbered rows with '#' (#4, #4-w0.1*), the others by key."""
    return f"#{key}" if str(key)[0].isdigit() else str(key)


def format_verdicts(summary: Sequence[dict]) -> str:
    """The verdict table: per module, the paper's increment, ours with its 95% interval, n, the
    smallest effect the design detects, and the verdict."""
    by_key = {(s["table"], s["row"]): s for s in summary}
    lines = ["| module | comparison | paper Δ | ours Δ [95% CI, pooled sd] | [95% CI, own sd] | seeds | "
             "detectable at 80% power | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        d = s["delta_miou"]
        if d is None:
            continue
        ref = by_key.get((s["table"], s["delta_vs"]))
        where = "" if s["table"] == "3" else f"{TABLE_TITLES[s['table']]}: "
        comparison = f"{where}{row_name(s['row'])} − {row_name(s['delta_vs'])}"
        paper = "–" if s["paper_delta"] is None else f"{s['paper_delta']:+.1f}"
        mde = "–" if d["mde"] is None else f"{100 * d['mde']:.1f}"
        seeds = d["n"] if ref is None or not ref["cpu"] else f"{d['n']} ({', '.join(s['cpu'])})"
        which = "pooled_ci" if d["pooled_ci"] is not None else "ci"
        lines.append(f"| {s['claim'] or s['label']} | {comparison} | {paper} | {format_increment(d, which)} | "
                     f"{_interval(d['ci'])} | {seeds} | {mde} | {d['verdict']} |")
    lines.append("")
    lines.append("Points of val mIoU × 100. Δ: the row minus the row it is compared with, paired by seed (same CPU "
                 "kind only). 95% CI, pooled sd: t with the pool's degrees of freedom on the sd pooled over the "
                 "paper's rows' paired differences (experimental rows left out); own sd: t with n − 1 degrees of "
                 "freedom on this row's differences alone. Detectable: the true Δ a paired t-test (α = 0.05, "
                 "two-sided) finds with 80% power at this n and the pooled sd. Verdict: helps / hurts when the "
                 "pooled interval excludes 0 (an experimental row's: when both intervals do).")
    return "\n".join(lines) + "\n"


def format_table(summary: Sequence[dict]) -> str:
    """table.md: the verdict table, then one Markdown table per table of rows, in points (x100)."""
    lines = ["### Verdicts", "", format_verdicts(summary)]
    for table in ("3", "4", "dap", "ecre", "controls"):
        rows = [s for s in summary if s["table"] == table]
        if not rows:
            continue
        size = next((r["eval_size"] for r in rows if r["eval_size"]), "?")
        lines += [f"### {TABLE_TITLES[table]}", "",
                  f"| # | row | modules | params | GFLOPs @{size}² | train s | val mIoU | boundary mIoU | vs | "
                  f"Δ mIoU [95% CI] | Δ boundary [95% CI] | paper mIoU | paper Δ |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in rows:
            d, db = s["delta_miou"], s["delta_boundary_miou"]
            paper = "–" if s["paper_miou"] is None else f"{s['paper_miou']:.1f}"
            paper_delta = "–" if s["paper_delta"] is None else f"{s['paper_delta']:+.1f}"
            params = "–" if s["params"] is None else f"{s['params'] / 1e6:.3f} M"
            gflops = "–" if s["gflops"] is None else f"{s['gflops']:.2f}"
            seconds = "–" if s["train_seconds"] is None else f"{s['train_seconds']:.0f}"
            lines.append(
                f"| {s['row']} | {s['label']} | {s['modules']} | {params} | {gflops} | {seconds} | "
                f"{spread(s['val_miou_mean'], s['val_miou_std'], len(s['seeds']))} | "
                f"{spread(s['boundary_miou_mean'], s['boundary_miou_std'], len(s['seeds']))} | "
                f"{'–' if d is None else '#' + str(s['delta_vs'])} | {'–' if d is None else format_increment(d)} | "
                f"{'–' if db is None else format_increment(db)} | {paper} | {paper_delta} |")
        lines.append("")
    grouped = [s for s in summary if s.get("class_groups")]
    controls = [s for s in grouped if s["table"] == "controls"]
    increments, compared = [], set()
    for s in grouped:  # a comparison that several tables share (#4 − #3) is shown once, as its first table has it
        pair = (s["config"], next((r["config"] for r in summary
                                   if r["table"] == s["table"] and r["row"] == s["delta_vs"]), None))
        if s["table"] != "controls" and pair not in compared:
            compared.add(pair)
            increments.append(s)
    lines += _control_table(
        "Each increment by class group", increments,
        [*CONTROL_GROUPS, *CONTROL_CONTRASTS, PAIR_CONTRAST], "Δ",
        "The group's mean IoU × 100 (a contrast: the first group's minus the second's; the last column from the "
        "val confusion matrix: context and shape accuracy as the positive controls define them), the row minus "
        "the row it is compared with, paired by seed on one CPU kind; 95% CI: t with n − 1 degrees of freedom. "
        "A module that gives low levels context (SS, SEB) should raise context − look-alikes and context − shape "
        "accuracy; one that adds resolution (ECRE, DAP) thin − look-alikes.", first="comparison")
    lines += _control_table(
        "Positive controls by class group", controls, [*CONTROL_GROUPS, *CONTROL_CONTRASTS], "Δ IoU",
        "The group's mean IoU × 100 (a contrast: the first group's minus the second's), the control minus row 1, "
        "paired by seed on one CPU kind; 95% CI: t with n − 1 degrees of freedom. A context control that works "
        "costs the context classes more than their look-alikes (context − look-alikes < 0); a resolution control "
        "the thin classes more (thin − look-alikes < 0).")
    lines += _control_table(
        "Positive controls: context and shape errors", controls, [*PAIR_ACCURACIES, PAIR_CONTRAST], "Δ",
        "From the val confusion matrix, over nucleus, disc, boxed and square, each class weighted equally (× 100): "
        "context accuracy, of the pixels called the class or its pair's other member (nucleus and disc, boxed and "
        "square), the share called the class; shape accuracy, of the pixels called any of the four, the share "
        "called a member of the class's own pair. A context control that works loses context accuracy more than "
        "shape accuracy (context − shape accuracy < 0).")
    lines.append("Scores are val mIoU × 100, mean ± sample std over the seeds. Boundary mIoU: Boundary IoU (Cheng et "
                 "al., CVPR 2021) in a band of 2% of the image diagonal. Paper: PASCAL VOC 2012 val, single scale.")
    return "\n".join(lines) + "\n"


def _control_table(title: str, controls: Sequence[dict], measures: Sequence[str], prefix: str, note: str,
                   first: str = "control") -> list:
    """A Markdown table of the rows' ``class_groups`` increments over ``measures`` (lines), or
    nothing when no row has any of them."""
    controls = [s for s in controls if any(s["class_groups"].get(g, {}).get("n") for g in measures)]
    if not controls:
        return []
    lines = [f"### {title}", "", f"| {first} | " + " | ".join(f"{prefix} {g} [95% CI]" for g in measures) + " |",
             "|---" * (len(measures) + 1) + "|"]
    for s in controls:
        cells = [format_increment(s["class_groups"][g]) if g in s["class_groups"] else "–" for g in measures]
        compared = f"{s['row']} − #{s['delta_vs']}"
        if first != "control":  # a module's increment: named by its claim, e.g. "SS: #2 − #1"
            compared = f"{s['claim'] or s['label']}: {row_name(s['row'])} − {row_name(s['delta_vs'])}"
        lines.append(f"| {compared} | " + " | ".join(cells) + " |")
    return lines + ["", note, ""]


def write_results(path: str, summary: Sequence[dict], results: dict, settings: dict) -> None:
    runs = [dict(r) for _, r in sorted(results.items())]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "rows": list(summary), "runs": runs}, f, indent=2)


def _ticks(limit: float, most: int = 9) -> list:
    """Round tick values (a step of 1, 2 or 5 times a power of ten) covering [-limit, limit]."""
    for power in range(-2, 4):
        for unit in (1, 2, 5):
            step = unit * 10.0 ** power
            n = int(math.floor(limit / step))
            if 2 * n + 1 <= most:
                return [k * step for k in range(-n, n + 1)]
    return [0.0]


def plot_deltas(path: str, summary: Sequence[dict]) -> None:
    """A horizontal bar chart, one band per compared row: our mean increment (points; blue bar) with
    the verdict's 95% interval (black whiskers: the pooled sd's, or the row's own when no pool
    exists), the row's own-sd interval (thin grey line), the paper's increment (grey bar) and the
    verdict in words. Labels are ASCII: Pillow's default font draws U+2212 (minus) as a box."""
    font = ImageFont.load_default()
    bands = [s for s in summary if s["delta_miou"] is not None and s["delta_miou"]["n"]]
    if not bands:
        bands = list(summary)

    def interval(s, key):
        d = s["delta_miou"]
        if d and d.get(key):
            return 100 * d[key][0], 100 * d[key][1]
        return None

    def verdict_interval(s):
        return interval(s, "pooled_ci") or interval(s, "ci")

    values = [s["paper_delta"] or 0.0 for s in bands]
    for s in bands:
        for ci in (verdict_interval(s), interval(s, "ci")):
            values += list(ci or [100 * (s["delta_miou"] or {"mean": 0.0})["mean"]])
    limit = max([1.0] + [abs(v) for v in values]) * 1.1
    label_w, plot_w, verdict_w, band_h, top = 280, 520, 170, 44, 48
    height = top + band_h * len(bands) + 60
    image = Image.new("RGB", (label_w + plot_w + verdict_w, height), "white")
    draw = ImageDraw.Draw(image)
    x0 = label_w + plot_w / 2
    scale = (plot_w / 2) / limit

    def x(v):
        return x0 + v * scale

    draw.text((10, 8), "Increment in val mIoU over the row it is compared with (points): ours (blue; black: 95% "
                       "interval, pooled sd; thin grey: own sd) vs the paper's VOC (grey bar)", fill="black", font=font)
    bottom = top + band_h * len(bands)
    for tick in _ticks(limit):
        draw.line([(x(tick), top - 6), (x(tick), bottom)], fill=(225, 225, 225))
        draw.text((x(tick) - 8, bottom + 6), f"{tick:+g}" if tick else "0", fill="black", font=font)
    draw.line([(x0, top - 6), (x0, bottom)], fill="black")
    for i, s in enumerate(bands):
        y = top + i * band_h
        d = s["delta_miou"]
        if d is None:
            continue
        name = f"#{s['row']} - #{s['delta_vs']}" if str(s["row"])[0].isdigit() else f"{s['row']} - {s['delta_vs']}"
        label = s["claim"] or s["label"]
        label = label if len(label) <= 44 else label[:43] + "."
        draw.text((10, y + 4), f"{TABLE_TITLES[s['table']]}, {name}", fill="black", font=font)
        draw.text((10, y + 20), f"{label} ({d['n']} seed{'s' if d['n'] != 1 else ''})", fill=(70, 70, 70), font=font)
        ours = 100 * d["mean"]
        draw.rectangle([min(x0, x(ours)), y + 6, max(x0, x(ours)), y + 20], fill=(49, 110, 180))
        own = interval(s, "ci")
        if own is not None:
            draw.line([(x(own[0]), y + 22), (x(own[1]), y + 22)], fill=(150, 150, 150), width=1)
        ci = verdict_interval(s)
        if ci is not None:
            draw.line([(x(ci[0]), y + 13), (x(ci[1]), y + 13)], fill="black", width=2)
            for end in ci:
                draw.line([(x(end), y + 8), (x(end), y + 18)], fill="black", width=2)
        if s["paper_delta"] is not None:
            paper = s["paper_delta"]
            draw.rectangle([min(x0, x(paper)), y + 25, max(x0, x(paper)), y + 35], fill=(160, 160, 160))
        verdict = (d.get("verdict") or "").replace("±", "+-")
        draw.text((label_w + plot_w + 10, y + 8), verdict, fill="black", font=font)
    image.save(path)


def mean_curves(rows: Sequence, results: dict, seeds: int) -> dict:
    """``{row key: [(steps, val mIoU x 100 averaged over seeds), ...]}`` from each run's
    ``val_miou_curve``, at the steps every seed of the row validated at; rows whose runs recorded
    no curve (transcribed sweeps) are left out. Rows sharing runs appear once."""
    curves = {}
    for key, row in curve_rows(rows).items():
        runs = [results[(row.run_name, s)] for s in range(seeds) if (row.run_name, s) in results]
        per_seed = [dict((int(step), float(v)) for step, v in r.get("val_miou_curve") or []) for r in runs]
        if not per_seed or not all(per_seed):
            continue
        steps = sorted(set.intersection(*(set(c) for c in per_seed)))
        if steps:
            curves[key] = [(step, 100 * float(np.mean([c[step] for c in per_seed]))) for step in steps]
    return curves


def curve_rows(rows: Sequence) -> dict:
    """``{key: row}``, one row per run (the first that names it), keyed by the row's key, or by
    ``"key (table)"`` where an earlier row of another run has that key (several tables)."""
    keyed, seen = {}, set()
    for row in rows:
        if row.run_name in seen:
            continue
        seen.add(row.run_name)
        keyed[row.key if row.key not in keyed else f"{row.key} ({TABLE_TITLES[row.table]})"] = row
    return keyed


CURVE_COLOURS = ((49, 110, 180), (214, 96, 40), (60, 150, 70), (170, 50, 150), (120, 120, 120), (200, 160, 20),
                 (30, 160, 170), (150, 80, 40), (90, 90, 200), (200, 60, 80))


def value_ticks(high: float) -> list:
    """Round gridline values for a val mIoU axis from 0 to ``high`` (a multiple of 10), the top
    included: every 10 points, every 20 when the top is 100 or another multiple of 20 above 80."""
    step = 20 if high > 80 and high % 20 == 0 else 10
    return [float(tick) for tick in np.arange(0, high + 1, step)]


def plot_curves(path: str, rows: Sequence, results: dict, seeds: int) -> bool:
    """A line chart of each row's val mIoU over training (``mean_curves``), one colour a row, the
    number of seeds in the legend; returns False (and writes nothing) when no run has a curve."""
    curves = mean_curves(rows, results, seeds)
    if not curves:
        return False
    font = ImageFont.load_default()
    left, top, plot_w, plot_h, legend_w = 60, 40, 560, 320, 260
    image = Image.new("RGB", (left + plot_w + legend_w, top + plot_h + 50), "white")
    draw = ImageDraw.Draw(image)
    last = max(step for curve in curves.values() for step, _ in curve)
    high = max(10.0, 10 * math.ceil(max(v for curve in curves.values() for _, v in curve) / 10))

    def xy(step, value):
        return left + plot_w * step / last, top + plot_h * (1 - value / high)

    draw.text((10, 8), "Val mIoU (x 100) over training, mean over seeds", fill="black", font=font)
    for tick in value_ticks(high):
        y = xy(0, tick)[1]
        draw.line([(left, y), (left + plot_w, y)], fill=(225, 225, 225))
        draw.text((10, y - 6), f"{tick:.0f}", fill="black", font=font)
    for step in sorted({s for curve in curves.values() for s, _ in curve}):
        draw.text((xy(step, 0)[0] - 14, top + plot_h + 6), f"{step:,}", fill="black", font=font)
    draw.text((left + plot_w / 2 - 20, top + plot_h + 24), "steps", fill="black", font=font)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    by_key = curve_rows(rows)
    for i, (key, curve) in enumerate(curves.items()):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        points = [xy(0, 0)] + [xy(step, value) for step, value in curve]
        draw.line(points, fill=colour, width=3)
        for point in points[1:]:
            draw.ellipse([point[0] - 3, point[1] - 3, point[0] + 3, point[1] + 3], fill=colour)
        n = sum((by_key[key].run_name, s) in results for s in range(seeds))
        label = f"#{key}: {by_key[key].claim or by_key[key].label}"
        label = label if len(label) <= 36 else label[:35] + "."
        y = top + 16 * i
        draw.rectangle([left + plot_w + 12, y + 2, left + plot_w + 28, y + 10], fill=colour)
        draw.text((left + plot_w + 34, y), f"{label} ({n} seed{'s' if n != 1 else ''})", fill="black", font=font)
    image.save(path)
    return True
