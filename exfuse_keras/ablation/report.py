"""The sweep's outputs: results.json, table.md and a plot of each row's gain next to the paper's.

Per row and over seeds: val mIoU and boundary mIoU as mean +- sample std, and the gain over the
table's reference row (Table 3: row 1; Table 4: its baseline) paired by seed: every seed's gain
is its row's score minus the reference's score with the same seed (same data order and
initialisation where the architectures share layers), and a paired t-test over the seeds says
whether the mean gain differs from 0 (with 2 seeds the test has 1 degree of freedom: only a
gain that is large against its spread reaches p < 0.05; the sign agreement across seeds is shown
too).
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REFERENCE = {"3": "1", "4": "baseline"}


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def paired_test(deltas) -> dict:
    """Mean and std of paired gains, the two-sided paired t-test's p, and sign agreement."""
    from scipy import stats

    deltas = np.asarray(deltas, np.float64)
    mean, std = _mean_std(deltas)
    if len(deltas) < 2:
        return {"mean": mean, "std": std, "p": None, "same_sign": True, "n": len(deltas)}
    if std == 0.0:
        p = 0.0 if mean != 0.0 else 1.0
    else:
        p = float(2 * stats.t.sf(abs(mean / (std / math.sqrt(len(deltas)))), len(deltas) - 1))
    same_sign = bool(np.all(deltas > 0) or np.all(deltas < 0))
    return {"mean": mean, "std": std, "p": p, "same_sign": same_sign, "n": len(deltas)}


def summarize(rows: Sequence, results: dict, seeds: int) -> list[dict]:
    """One dict per row: modules, cost, scores over seeds, paired gain vs the table's reference."""
    summary = []
    for row in rows:
        runs = [results[(row.run_name, s)] for s in range(seeds) if (row.run_name, s) in results]
        if not runs:
            continue
        reference = next(r for r in rows if r.table == row.table and r.key == REFERENCE[row.table])
        paired = [(results[(row.run_name, s)], results[(reference.run_name, s)]) for s in range(seeds)
                  if (row.run_name, s) in results and (reference.run_name, s) in results]
        miou, miou_std = _mean_std([r["val_miou"] for r in runs])
        biou, biou_std = _mean_std([r["val_boundary_miou"] for r in runs])
        paper_delta = None
        if row.paper_miou is not None and reference.paper_miou is not None:
            paper_delta = round(row.paper_miou - reference.paper_miou, 1)
        summary.append({
            "table": row.table, "row": row.key, "label": row.label, "config": row.config,
            "modules": runs[0]["modules"], "experimental": row.experimental, "ss_pretraining": row.ss_pretraining,
            "params": runs[0]["params"], "gflops": runs[0]["gflops"], "eval_size": runs[0]["eval_size"],
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            "seeds": [r["seed"] for r in runs],
            "val_miou": [r["val_miou"] for r in runs], "val_miou_mean": miou, "val_miou_std": miou_std,
            "boundary_miou": [r["val_boundary_miou"] for r in runs], "boundary_miou_mean": biou,
            "boundary_miou_std": biou_std,
            "delta_vs": reference.key,
            "delta_miou": paired_test([a["val_miou"] - b["val_miou"] for a, b in paired]),
            "delta_boundary_miou": paired_test([a["val_boundary_miou"] - b["val_boundary_miou"] for a, b in paired]),
            "paper_miou": row.paper_miou, "paper_delta": paper_delta,
        })
    return summary


def _significance(test: dict) -> str:
    if test["p"] is None:
        return "1 seed: no test"
    verdict = "p < 0.05" if test["p"] < 0.05 else "n.s."
    return f"p = {test['p']:.2f} ({verdict}; {'same sign on all seeds' if test['same_sign'] else 'signs differ'})"


def _spread(mean: float, std: float, n: int, sign: str = "") -> str:
    """``mean ± std`` in points (x100), or ``mean (1 seed)``: one value has no spread."""
    if n > 1:
        return f"{100 * mean:{sign}.2f} ± {100 * std:.2f}"
    return f"{100 * mean:{sign}.2f} (1 seed)"


def format_table(summary: Sequence[dict]) -> str:
    """table.md: one Markdown table per paper table, scores in mIoU points (x100)."""
    lines = []
    for table in ("3", "4"):
        rows = [s for s in summary if s["table"] == table]
        if not rows:
            continue
        ref = REFERENCE[table]
        lines += [f"### Table {table}", "",
                  f"| # | row | modules | params | GFLOPs @{rows[0]['eval_size']}² | train s | val mIoU | "
                  f"boundary mIoU | Δ mIoU vs #{ref} | paired test | Δ boundary | paper mIoU | paper Δ |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in rows:
            d, db = s["delta_miou"], s["delta_boundary_miou"]
            is_ref = s["row"] == ref
            paper = "–" if s["paper_miou"] is None else f"{s['paper_miou']:.1f}"
            paper_delta = "–" if s["paper_delta"] is None or is_ref else f"{s['paper_delta']:+.1f}"
            lines.append(
                f"| {s['row']} | {s['label']} | {s['modules']} | {s['params'] / 1e6:.3f} M | {s['gflops']:.2f} | "
                f"{s['train_seconds']:.0f} | {_spread(s['val_miou_mean'], s['val_miou_std'], len(s['seeds']))} | "
                f"{_spread(s['boundary_miou_mean'], s['boundary_miou_std'], len(s['seeds']))} | "
                + ("–" if is_ref else _spread(d["mean"], d["std"], d["n"], "+")) + " | "
                + ("–" if is_ref else _significance(d)) + " | "
                + ("–" if is_ref else f"{100 * db['mean']:+.2f}") + f" | {paper} | {paper_delta} |")
        lines.append("")
    lines.append("Scores are val mIoU × 100, mean ± sample std over the seeds; Δ is paired by seed "
                 "(mean ± std of the per-seed differences). Boundary mIoU: Boundary IoU (Cheng et al., CVPR 2021) "
                 "in a band of 2% of the image diagonal. Paper: PASCAL VOC 2012 val, single scale.")
    return "\n".join(lines) + "\n"


def write_results(path: str, summary: Sequence[dict], results: dict, settings: dict) -> None:
    runs = [dict(r) for _, r in sorted(results.items())]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "rows": list(summary), "runs": runs}, f, indent=2)


def plot_deltas(path: str, summary: Sequence[dict]) -> None:
    """A horizontal bar chart per table: our paired Δ mIoU (points, with ± std) next to the paper's."""
    font = ImageFont.load_default()
    bands = [s for s in summary if s["row"] != REFERENCE[s["table"]]]
    if not bands:
        bands = list(summary)
    values = [100 * s["delta_miou"]["mean"] for s in bands] + [s["paper_delta"] or 0.0 for s in bands]
    spread = [100 * (abs(s["delta_miou"]["mean"]) + s["delta_miou"]["std"]) for s in bands]
    limit = max([1.0] + [abs(v) for v in values] + spread) * 1.15
    label_w, plot_w, band_h, top = 260, 520, 44, 48
    height = top + band_h * len(bands) + 60
    image = Image.new("RGB", (label_w + plot_w + 40, height), "white")
    draw = ImageDraw.Draw(image)
    x0 = label_w + plot_w / 2
    scale = (plot_w / 2) / limit

    def x(v):
        return x0 + v * scale

    draw.text((10, 8), "Gain in val mIoU over the table's reference row (points): ours (blue, ± std over seeds) "
                       "vs the paper's VOC (grey)", fill="black", font=font)
    for tick in np.linspace(-limit, limit, 9):
        draw.line([(x(tick), top - 6), (x(tick), top + band_h * len(bands))], fill=(225, 225, 225))
        draw.text((x(tick) - 12, top + band_h * len(bands) + 6), f"{tick:+.1f}", fill="black", font=font)
    draw.line([(x0, top - 6), (x0, top + band_h * len(bands))], fill="black")
    for i, s in enumerate(bands):
        y = top + i * band_h
        # Two lines: which row, then what it adds (cut to the label column's width).
        name = f"row {s['row']}" if str(s["row"]).isdigit() else str(s["row"])
        label = s["label"] if len(s["label"]) <= 42 else s["label"][:41] + "…"
        draw.text((10, y + 4), f"Table {s['table']}, {name}", fill="black", font=font)
        draw.text((10, y + 20), label, fill=(70, 70, 70), font=font)
        ours, std = 100 * s["delta_miou"]["mean"], 100 * s["delta_miou"]["std"]
        draw.rectangle([min(x0, x(ours)), y + 6, max(x0, x(ours)), y + 20], fill=(49, 110, 180))
        draw.line([(x(ours - std), y + 13), (x(ours + std), y + 13)], fill="black", width=2)
        for end in (ours - std, ours + std):
            draw.line([(x(end), y + 8), (x(end), y + 18)], fill="black", width=2)
        if s["paper_delta"] is not None:
            paper = s["paper_delta"]
            draw.rectangle([min(x0, x(paper)), y + 23, max(x0, x(paper)), y + 35], fill=(160, 160, 160))
    image.save(path)
