"""Does the rows' order hold at a longer budget? The same rows and seeds at two or more step budgets.

At the calibrated 4,000 steps every row still rises at the end, so the sweep's table may rank how
fast each module lets a small network learn rather than where it converges. This reads the runs
of the same rows and seeds trained for several budgets (``python -m exfuse_keras.ablation
--steps 8000 ...``) and sets them side by side. For each budget a row's runs are the ones a sweep
of that budget would reuse (``sweep.finished``: the row's design now, that budget's settings)
from the results files given; per budget and row:

- the mean val mIoU over the seeds, and the change from the first budget to each later one,
  paired by seed (95% interval: t with n - 1 degrees of freedom on the row's own differences);
- the rise over the run's last validation interval, mean over seeds: how far from flat the
  curve still is when the budget ends (the sweep validates 4 times a run, so this is the last
  quarter of the schedule at every budget, where the poly decay anneals the rate to 0);
- each comparison, paired by seed (``report.summarize``): the paper's increments among the rows
  given, and ``--compare A-B`` for a pair the paper does not draw (row 7 against row 5 when row
  6 is not run), with the 95% interval on the sd pooled over that budget's comparisons;
- the order of the rows, best first, by mean and on each seed.

Usage::

    python -m exfuse_keras.ablation.budgets --table 3 --rows 3,4,5,7 --compare 7-5 --seeds 2 \\
        --budgets 4000,8000 --committed docs/results/ablation4000_xeon.json \\
        --committed docs/results/ablation_rows67_xeon.json --committed docs/results/ablation8000_xeon.json \\
        --output runs/ablation_budgets

Writes ``budgets.md`` (the tables), ``budgets.json`` and ``budgets.png`` (each row's mean curve at
every budget, one colour a row: thin with hollow points for the shorter budgets, thick for the
longest) under ``--output``. It trains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from exfuse_keras.ablation import report


def late_gain(run: dict) -> Optional[float]:
    """The val mIoU gained over the run's last validation interval (fraction, not points):
    ``v[-1] - v[-2]`` of its ``val_miou_curve`` ``[[s, v], ...]`` sorted by step (a step logged
    twice, as a resumed run's CSV may, counts once: its last value); None with fewer than two
    steps. ``last_interval`` gives the interval's length."""
    curve = sorted(dict((int(step), float(value)) for step, value in run.get("val_miou_curve") or []).items())
    if len(curve) < 2:
        return None
    return curve[-1][1] - curve[-2][1]


def last_interval(run: dict) -> Optional[int]:
    """The steps between the last two validations of ``run``'s curve, or None."""
    steps = sorted({int(step) for step, _ in run.get("val_miou_curve") or []})
    return steps[-1] - steps[-2] if len(steps) > 1 else None


def _split_pair(pair: str, keys: Sequence[str]) -> tuple:
    """``(A, B)`` of ``"A-B"`` where both are among ``keys`` (keys may hold hyphens: ``6-noBR-5``);
    a ValueError saying what was expected otherwise."""
    splits = [(pair[:i], pair[i + 1:]) for i, c in enumerate(pair) if c == "-"]
    found = [(a, b) for a, b in splits if a in keys and b in keys]
    if len(found) != 1 or found[0][0] == found[0][1]:
        raise ValueError(f"--compare {pair}: expected A-B, two different row keys of --rows ({', '.join(keys)})")
    return found[0]


def with_comparisons(rows: Sequence, compare: Sequence[str]) -> tuple:
    """``rows`` with each ``"A-B"`` of ``compare`` making row A an increment over row B (its claim:
    the modules, SS included, A has and B lacks, and those B has and A lacks); a ValueError naming
    the pair when it is not two rows given, or when row A is already compared with a row given
    (the new pair would replace that comparison) or named twice."""
    from exfuse_keras.ablation.rows import CONFIG_DIR, modules_on
    from exfuse_keras.config import load_config

    by_key = {row.key: row for row in rows}
    out = list(rows)

    def modules(row) -> list:
        names = [m for m in modules_on(load_config(os.path.join(CONFIG_DIR, row.config))).split("+") if m != "-"]
        return (["SS"] if row.ss_pretraining else []) + names

    replaced = {}
    for pair in compare:
        a, b = _split_pair(pair, list(by_key))
        if a in replaced or by_key[a].reference in by_key:
            had = replaced.get(a, by_key[a].reference)
            raise ValueError(f"--compare {pair}: row {a} is already compared with #{had}; one comparison a row")
        replaced[a] = b
        have, lack = modules(by_key[a]), modules(by_key[b])
        added, removed = [m for m in have if m not in lack], [m for m in lack if m not in have]
        claim = " and ".join(added) or "nothing"
        claim += f", without {' and '.join(removed)}" if removed else ""
        out[out.index(by_key[a])] = dataclasses.replace(by_key[a], reference=b, claim=f"{claim} (on #{b})")
    return tuple(out)


def of_budget(committed, settings):
    """The runs of ``committed`` (``sweep.committed_runs``) trained with ``settings``' budget
    (steps, data, preset, pretraining, overrides: ``sweep.budget_record``), as a
    ``CommittedRuns``; a (row, seed) with no run of this budget is absent, not an error."""
    from exfuse_keras.ablation.sweep import CommittedRuns, budget_differences

    out = CommittedRuns()
    for key in list(committed):
        for result, source in committed.candidates(key):
            if budget_differences(result, settings):
                continue
            if key not in out:
                out[key], out.sources[key] = result, source
            else:
                out.others.setdefault(key, []).append((result, source))
    return out


def budget_results(rows: Sequence, settings, committed, log=lambda message: None) -> dict:
    """``{(run name, seed): result}`` of the committed runs (``sweep.committed_runs``) a sweep of
    ``settings`` (its steps: the budget) would reuse: that budget's, of each row's design now
    (``sweep.finished``; a run of another design is left out and said to ``log``). A ConfigError
    when two committed runs of one row, seed, design and budget scored differently."""
    from exfuse_keras.ablation.sweep import finished

    committed = of_budget(committed, settings)
    results = {}
    for row in rows:
        for seed in range(settings.seeds):
            result = finished(row, settings, seed, committed, log)
            if result is not None:
                results[(row.run_name, seed)] = result
    return results


def _ranking(scores: dict) -> str:
    """``#5 > #3 = #4``: row keys by score, best first; equal scores joined by ``=``."""
    keys = sorted(scores, key=lambda k: -scores[k])
    text = f"#{keys[0]}" if keys else ""
    for before, key in zip(keys, keys[1:]):
        text += f" {'=' if scores[key] == scores[before] else '>'} #{key}"
    return text


def compare_budgets(rows: Sequence, results_by_budget: dict, seeds: int) -> dict:
    """Per budget (``{steps: results}``, ``budget_results``): ``summary`` (``report.summarize``),
    ``late_gain`` (``{row key: mean late_gain over seeds}``), ``interval`` (the steps of the runs'
    last validation interval, None when they differ), ``order`` (``_ranking`` of the rows' mean
    val mIoU over the seeds every row ran, ``order_seeds`` those seeds) and ``order_by_seed``
    (``{seed: ranking}``, seeds every row ran); and ``changes``: ``{later budget: {row key:
    paired_increment of that budget's val mIoU minus the first budget's, same seed and CPU kind,
    with ``seeds``: the seeds paired}}``."""
    budgets = sorted(results_by_budget)
    out = {"budgets": budgets, "per_budget": {}, "changes": {}}
    for steps in budgets:
        results = results_by_budget[steps]
        summary = report.summarize(rows, results, seeds)
        gains, intervals = {}, set()
        for row in rows:
            runs = [results[(row.run_name, s)] for s in range(seeds) if (row.run_name, s) in results]
            values = [v for v in (late_gain(r) for r in runs) if v is not None]
            intervals |= {last_interval(r) for r in runs if last_interval(r) is not None}
            if values:
                gains[row.key] = float(np.mean(values))
        complete = [s for s in range(seeds) if all((row.run_name, s) in results for row in rows)]
        by_seed = {s: _ranking({row.key: results[(row.run_name, s)]["val_miou"] for row in rows}) for s in complete}
        means = {row.key: float(np.mean([results[(row.run_name, s)]["val_miou"] for s in complete]))
                 for row in rows} if complete else {}
        out["per_budget"][steps] = {"summary": summary, "late_gain": gains,
                                    "interval": intervals.pop() if len(intervals) == 1 else None,
                                    "order": _ranking(means) if complete else "", "order_seeds": complete,
                                    "order_by_seed": by_seed}
    first = results_by_budget[budgets[0]]
    for steps in budgets[1:]:
        later, changes = results_by_budget[steps], {}
        for row in rows:
            paired = [s for s in range(seeds) if (row.run_name, s) in later and (row.run_name, s) in first
                      and report.cpu_kind(later[(row.run_name, s)]) == report.cpu_kind(first[(row.run_name, s)])]
            changes[row.key] = report.paired_increment(
                [later[(row.run_name, s)]["val_miou"] - first[(row.run_name, s)]["val_miou"] for s in paired])
            changes[row.key]["seeds"] = paired
        out["changes"][steps] = changes
    return out


def _points(value: Optional[float], sign: str = "") -> str:
    """``value`` (a fraction) in points x 100 with two decimals, or ``–`` for None."""
    return "–" if value is None else f"{100 * value:{sign}.2f}"


def _pool(summary: Sequence[dict]) -> tuple:
    """The (sd, df) ``report.summarize`` pooled the intervals of ``summary`` with ((None, 0): none)."""
    for s in summary:
        d = s["delta_miou"]
        if d is not None and d.get("pooled_sd") is not None:
            return d["pooled_sd"], d["pooled_df"]
    return None, 0


def format_budgets(rows: Sequence, comparison: dict) -> str:
    """budgets.md: the rows at each budget, the comparisons at each budget, and the orders."""
    budgets = comparison["budgets"]
    per = comparison["per_budget"]
    first = budgets[0]

    def window(b):
        return f"last {per[b]['interval']:,} steps" if per[b]["interval"] else "last interval"

    def seeds(b):
        ran = sorted({seed for s in per[b]["summary"] for seed in s["seeds"]})
        return f"seed{'s' if len(ran) != 1 else ''} {', '.join(str(seed) for seed in ran)}"

    def change(d):
        if d["n"] == 1:
            return f"{100 * d['mean']:+.2f} (seed {d['seeds'][0]})"
        return report.format_increment(d)

    head = ["#", "row", "modules"] + [f"val mIoU, {b:,} ({seeds(b)})" for b in budgets]
    head += [f"{b:,} − {first:,} [95% CI]" for b in budgets[1:]]
    head += [f"rise, {window(b)} of {b:,}" for b in budgets]
    lines = ["### The rows at each budget", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.key, row.label]
        found = [next((s for s in per[b]["summary"] if s["row"] == row.key), None) for b in budgets]
        cells.append(next((s["modules"] for s in found if s is not None), "–"))
        cells += ["–" if s is None else report.spread(s["val_miou_mean"], s["val_miou_std"], len(s["seeds"]))
                  for s in found]
        cells += [change(comparison["changes"][b][row.key]) for b in budgets[1:]]
        cells += [_points(per[b]["late_gain"].get(row.key), "+") for b in budgets]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Val mIoU × 100, mean ± sd over seeds; the change paired by seed on one CPU kind (95% CI: t, "
              "n − 1 df; the seed, when one). Rise: over the last validation interval, the "
              "schedule's last quarter, where the rate anneals to 0; mean over seeds (–: no curve in the results).",
              ""]
    head = ["module", "comparison", "paper Δ"] + [f"Δ at {b:,} ({seeds(b)}) [95% CI, pooled sd]" for b in budgets] + \
           [f"verdict at {b:,}" for b in budgets]
    lines += ["### The increments at each budget", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        found = [next((s for s in per[b]["summary"] if s["row"] == row.key and s["delta_miou"] is not None), None)
                 for b in budgets]
        if not any(found):
            continue
        s = next(s for s in found if s is not None)
        paper = "–" if s["paper_delta"] is None else f"{s['paper_delta']:+.1f}"
        cells = [s["claim"] or s["label"], f"#{row.key} − #{s['delta_vs']}", paper]
        for f in found:
            d = None if f is None else f["delta_miou"]
            cells.append("–" if d is None else report.format_increment(
                d, "pooled_ci" if d["pooled_ci"] is not None else "ci"))
        cells += ["–" if f is None else f["delta_miou"]["verdict"] for f in found]
        lines.append("| " + " | ".join(cells) + " |")
    pools = {b: _pool(per[b]["summary"]) for b in budgets}
    pool_text = "; ".join(f"{b:,}: sd {_points(sd)}, {df} df" if sd is not None else f"{b:,}: none"
                          for b, (sd, df) in pools.items())
    lines += ["", "Points, paired by seed on one CPU kind. Pooled sd: over every comparison above at that budget, "
              f"experimental rows left out ({pool_text}).", ""]
    seeds = sorted({s for b in budgets for s in per[b]["order_by_seed"]})
    lines += ["### The order of the rows", "",
              "| budget | by mean, best first | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|" + "---|" * len(seeds)]
    for b in budgets:
        lines.append(f"| {b:,} steps | {per[b]['order'] or '–'} | " +
                     " | ".join(per[b]["order_by_seed"].get(s, "–") for s in seeds) + " |")
    lines += ["", "Means over the seeds every row ran at that budget; a seed only where every row ran it.", ""]
    return "\n".join(lines)


def plot_budgets(path: str, rows: Sequence, results_by_budget: dict, seeds: int) -> bool:
    """Each row's mean val mIoU curve (``report.mean_curves``) at every budget on one chart: one
    colour a row; the longest budget thick with filled points, shorter ones thin with hollow
    points; a row whose runs at a budget recorded no curve gets its mean final score there as one
    larger point. False (nothing written) when no run has a curve."""
    budgets = sorted(results_by_budget)
    curves = {b: report.mean_curves(rows, results_by_budget[b], seeds) for b in budgets}
    if not any(curves.values()):
        return False
    font = ImageFont.load_default()
    left, top, plot_w, plot_h, legend_w = 60, 40, 560, 320, 300
    image = Image.new("RGB", (left + plot_w + legend_w, top + plot_h + 50), "white")
    draw = ImageDraw.Draw(image)
    values = [v for c in curves.values() for curve in c.values() for _, v in curve]
    values += [100 * r["val_miou"] for results in results_by_budget.values() for r in results.values()]
    last = max([step for c in curves.values() for curve in c.values() for step, _ in curve] + budgets)
    high = max(10.0, 10 * np.ceil(max(values) / 10))

    def xy(step, value):
        return left + plot_w * step / last, top + plot_h * (1 - value / high)

    draw.text((10, 8), "Val mIoU (x 100) over training at each budget, mean over the seeds each row ran",
              fill="black", font=font)
    for tick in report.value_ticks(high):
        y = xy(0, tick)[1]
        draw.line([(left, y), (left + plot_w, y)], fill=(225, 225, 225))
        draw.text((10, y - 6), f"{tick:.0f}", fill="black", font=font)
    for step in sorted({s for c in curves.values() for curve in c.values() for s, _ in curve}):
        draw.text((xy(step, 0)[0] - 14, top + plot_h + 6), f"{step:,}", fill="black", font=font)
    draw.text((left + plot_w / 2 - 20, top + plot_h + 24), "steps", fill="black", font=font)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    keys = list(report.curve_rows(rows))
    by_key = report.curve_rows(rows)
    for b in budgets:
        thick = b == budgets[-1]
        for key, curve in curves[b].items():
            colour = report.CURVE_COLOURS[keys.index(key) % len(report.CURVE_COLOURS)]
            points = [xy(0, 0)] + [xy(step, value) for step, value in curve]
            draw.line(points, fill=colour, width=3 if thick else 1)
            for x, y in points[1:]:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour if thick else "white", outline=colour)
        # Runs that recorded no curve (an older sweep's) still have their final score: one point.
        for key, row in by_key.items():
            scores = [results_by_budget[b][(row.run_name, s)]["val_miou"] for s in range(seeds)
                      if (row.run_name, s) in results_by_budget[b]]
            if key not in curves[b] and scores:
                colour = report.CURVE_COLOURS[keys.index(key) % len(report.CURVE_COLOURS)]
                x, y = xy(b, 100 * float(np.mean(scores)))
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour if thick else "white", outline=colour,
                             width=2)
    for i, key in enumerate(keys):
        colour = report.CURVE_COLOURS[i % len(report.CURVE_COLOURS)]
        y = top + 16 * i
        label = f"#{key}: {by_key[key].label}"
        label = label if len(label) <= 40 else label[:39] + "."
        draw.rectangle([left + plot_w + 12, y + 2, left + plot_w + 28, y + 10], fill=colour)
        draw.text((left + plot_w + 34, y), label, fill="black", font=font)
    y = top + 16 * len(keys) + 8
    draw.text((left + plot_w + 12, y), f"thick: {budgets[-1]:,} steps; thin, hollow: "
                                       f"{', '.join(f'{b:,}' for b in budgets[:-1])}", fill="black", font=font)
    draw.text((left + plot_w + 12, y + 16), "lone point: the final score of runs", fill="black", font=font)
    draw.text((left + plot_w + 12, y + 30), "that recorded no curve", fill="black", font=font)
    image.save(path)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exfuse_keras.ablation.budgets",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--table", default="3", help="the ablation table of the rows (3, 4, dap, ecre, ...)")
    parser.add_argument("--rows", default=None, help="only these rows of --table, by key (e.g. 3,4,5,7)")
    parser.add_argument("--compare", action="append", default=[], metavar="A-B",
                        help="also compare row A with row B, paired by seed (repeatable)")
    parser.add_argument("--budgets", required=True, help="the step budgets, comma separated (e.g. 4000,8000)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1")
    parser.add_argument("--config-set", default="cpu", choices=("paper", "cpu"))
    parser.add_argument("--data", default="configs/data/scenes_128.yaml")
    parser.add_argument("--pretrain", default="presence", choices=("presence", "config"),
                        help="the runs' pretraining (as given to their sweeps)")
    parser.add_argument("--pretrain-steps", type=int, default=1000, help="the runs' presence pretraining steps")
    parser.add_argument("--max-seconds", type=float, default=None, help="the runs' wall-clock cap, if they had one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="the runs' config overrides (as given to their sweeps)")
    parser.add_argument("--committed", action="append", required=True, metavar="RESULTS_JSON",
                        help="a sweep's results.json (repeatable): the runs of every budget")
    parser.add_argument("--output", default="runs/ablation_budgets")
    args = parser.parse_args(argv)
    from exfuse_keras.ablation.rows import rows_for
    from exfuse_keras.ablation.sweep import SweepSettings, committed_runs
    from exfuse_keras.config import ConfigError

    try:
        try:
            budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
        except ValueError:
            budgets = []
        if len(budgets) < 2 or budgets[0] < 1:
            raise ValueError(f"--budgets {args.budgets}: expected two or more step counts, e.g. 4000,8000")
        rows = rows_for(args.table)
        if args.rows:
            keys = [key.strip() for key in args.rows.split(",") if key.strip()]
            unknown = [key for key in keys if key not in [row.key for row in rows]]
            if unknown:
                raise ValueError(f"--rows: no row {', '.join(unknown)} in --table {args.table}")
            rows = tuple(row for row in rows if row.key in keys)
        if len({row.key for row in rows}) < len(rows):
            raise ValueError(f"--table {args.table}: its rows share keys; give one table (or --rows)")
        rows = with_comparisons(rows, args.compare)
        committed = committed_runs(args.committed)
        results_by_budget = {}
        for steps in budgets:
            # Committed results only: no run folder is read (finished() looks in output's first).
            settings = SweepSettings(data=args.data, preset=args.config_set, steps=steps, seeds=args.seeds,
                                     output=os.path.join(args.output, "no_runs_here"),
                                     pretrain=args.pretrain, pretrain_steps=args.pretrain_steps,
                                     max_seconds=args.max_seconds, overrides=list(args.set))
            results_by_budget[steps] = budget_results(rows, settings, committed,
                                                      lambda message: print(f"note: {message}", file=sys.stderr))
            if not results_by_budget[steps]:
                raise ValueError(f"no run of {steps:,} steps of these rows in {', '.join(args.committed)}")
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    comparison = compare_budgets(rows, results_by_budget, args.seeds)
    os.makedirs(args.output, exist_ok=True)
    table = format_budgets(rows, comparison)
    with open(os.path.join(args.output, "budgets.md"), "w", encoding="utf-8") as f:
        f.write(table)
    with open(os.path.join(args.output, "budgets.json"), "w", encoding="utf-8") as f:
        json.dump({"command": " ".join(["python -m exfuse_keras.ablation.budgets",
                                        *(argv if argv is not None else sys.argv[1:])]),
                   "budgets": budgets, "per_budget": {str(b): v for b, v in comparison["per_budget"].items()},
                   "changes": {str(b): v for b, v in comparison["changes"].items()}}, f, indent=2)
    plotted = plot_budgets(os.path.join(args.output, "budgets.png"), rows, results_by_budget, args.seeds)
    print(table)
    print(f"wrote {args.output}/budgets.md, budgets.json" + (" and budgets.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
