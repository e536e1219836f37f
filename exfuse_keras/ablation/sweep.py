"""The sweep: every (row, seed) run of the chosen tables as an ordinary run directory.

Layout under ``--output``::

    pretraining/<plain|ss>_<blocks>_seed<k>/   class-presence pretraining (presence.py)
    runs/<row config stem>/seed<k>/             train.py's run directory + result.json
    results.json, table.md, ablation.png        (report.py)

A run whose ``result.json`` exists is finished and skipped, so a killed sweep resumes where it
stopped (an unfinished run resumes from its own backup, as train.py does); rows that share a
config (Table 4's baseline is Table 3's row 3) share their runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Sequence, Union

from exfuse_keras.ablation.presence import pretrain_presence, pretraining_config
from exfuse_keras.ablation.rows import CONFIG_DIR, Row, modules_on, preset_overrides
from exfuse_keras.config import Config, ConfigError, load_config, load_config_stack
from exfuse_keras.machine import cpu_record

RESULT_FILE = "result.json"
# Train keys that are the run's budget, seed or bookkeeping (recorded in the settings, or not a
# property of the method): left out of a run's design record.
_NOT_DESIGN = ("train.seed", "train.epochs", "train.steps_per_epoch", "train.max_train_seconds",
               "train.budget_mode", "train.init.", "train.val_batch_size", "train.log_every_steps",
               "model.backbone.weights")
# Validation (and backup) points per run: the budget is split into this many epochs.
EPOCHS_PER_RUN = 4


@dataclasses.dataclass
class SweepSettings:
    """What every run of a sweep shares.

    Attributes:
        data: dataset config (``configs/data/*.yaml``).
        preset: ``paper`` or ``cpu`` (rows.py).
        steps: training steps per run (the equal budget).
        seeds: seeds 0 .. seeds - 1, the same for every row.
        output: the sweep's folder.
        max_seconds: optional wall-clock cap per run (stops the run early; steps stay the budget).
        pretrain: ``presence`` (SS on the dataset's class-presence labels, presence.py) or
            ``config`` (the rows' ``model.backbone.weights`` as given, e.g. ImageNet SS weights).
        pretrain_steps: steps of each presence pretraining.
        overrides: extra ``key=value`` overrides for every run.
        committed: results.json files of earlier calls (e.g. committed under docs/; one path or a
            list): their runs count as finished, so a sweep continues on another machine where the
            last stopped.
    """

    data: str
    preset: str = "cpu"
    steps: int = 4000
    seeds: int = 2
    output: str = "runs/ablation"
    max_seconds: Optional[float] = None
    pretrain: str = "presence"
    pretrain_steps: int = 1000
    overrides: Sequence[str] = ()
    committed: Union[str, Sequence[str], None] = None


def row_config(row: Row, settings: SweepSettings, seed: int) -> Config:
    """The config of one run: the row's, then the dataset's, then the preset and the budget."""
    path = os.path.join(CONFIG_DIR, row.config)
    stacked = load_config_stack([path, settings.data])
    epochs = min(EPOCHS_PER_RUN, settings.steps)
    budget = [f"train.epochs={epochs}", f"train.steps_per_epoch={max(1, settings.steps // epochs)}",
              f"train.seed={seed}", "train.budget_mode=stop",
              f"train.max_train_seconds={settings.max_seconds if settings.max_seconds else 'null'}"]
    return load_config_stack([path, settings.data], preset_overrides(settings.preset, stacked.model.backbone.blocks,
                                                                  stacked.model.gcn_kernel)
                             + budget + list(settings.overrides))


def row_modules(row: Row) -> str:
    """The row's modules as shipped (LR read from the unscaled block counts)."""
    return modules_on(load_config(os.path.join(CONFIG_DIR, row.config)))


def pretraining_dir(cfg: Config, row: Row, settings: SweepSettings, seed: int) -> str:
    kind = "ss" if row.ss_pretraining else "plain"
    blocks = "-".join(str(b) for b in cfg.model.backbone.blocks)
    return os.path.join(settings.output, "pretraining", f"{kind}_{blocks}_seed{seed}")


def run_dir(row: Row, settings: SweepSettings, seed: int) -> str:
    return os.path.join(settings.output, "runs", row.run_name, f"seed{seed}")


def budget_record(settings: SweepSettings) -> dict:
    """The settings a finished run must share with a sweep that reuses it (seeds and tables may
    grow between calls; the budget, data, preset and overrides may not)."""
    return {"data": os.path.normpath(settings.data), "preset": settings.preset, "steps": settings.steps,
            "max_seconds": settings.max_seconds, "pretrain": settings.pretrain,
            "pretrain_steps": settings.pretrain_steps if settings.pretrain == "presence" else None,
            "overrides": budget_overrides(settings.overrides)}


def budget_overrides(overrides: Sequence[str]) -> list:
    """The ``--set`` overrides a budget record holds: all but the ``model.*`` and ``train.*`` keys
    of a design, which the runs' design records compare instead (so an ECRE-weight sweep reuses
    row 3's runs, whose design that weight does not touch)."""
    return [override for override in overrides if _design_key(override) is None]


def _design_key(override: str) -> Optional[str]:
    """The dotted key of a ``key=value`` override when it sets part of a run's design, else None."""
    key = override.split("=", 1)[0].strip()
    return key if key.startswith(("model.", "train.")) and not key.startswith(_NOT_DESIGN) else None


def _flatten(prefix: str, value) -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(f"{prefix}.{key}", item))
        return flat
    return {prefix: value}


def design_record(cfg: Config) -> dict:
    """The run's method as dotted config keys: every ``model.*`` and ``train.*`` value but the
    budget, the seed and the backbone's weights file (``_NOT_DESIGN``). Two runs of one row are the
    same design when the keys both record agree; a key one of them lacks (a field added to the
    config since) is not compared."""
    flat = {**_flatten("model", dataclasses.asdict(cfg.model)), **_flatten("train", dataclasses.asdict(cfg.train))}
    idle = _idle_settings(cfg)
    return {key: value for key, value in flat.items() if not key.startswith(_NOT_DESIGN) and key not in idle}


def _idle_settings(cfg: Config) -> tuple:
    """Keys that change nothing in this model: the auxiliary losses' weights and targets when the
    model has no such output. Row 3 trained with ``train.ecre_loss_weight: 0.1`` is row 3, so a
    sweep of ECRE's weight pairs its rows with row 3's runs at the default weight."""
    idle = ()
    if not (cfg.model.ecre.supervised and "res5" in cfg.model.decoder_levels):  # no "ecre" output
        idle += ("train.ecre_loss_weight", "train.ecre_target")
    if not cfg.model.ss.levels:
        idle += ("train.ss_loss_weight",)
    return idle


def design_differences(result: dict, design: dict) -> list:
    """``key=old (now new)`` for each design key ``result`` recorded with another value than
    ``design`` (the row's config now); empty for a run of the same design, or one that recorded none."""
    had = result.get("design") or {}
    return [f"{key}={had[key]!r} (now {design[key]!r})" for key in sorted(had)
            if key in design and had[key] != design[key]]


class CommittedRuns(dict):
    """``{(run name, seed): result}`` of committed results files, with ``sources``: the file each
    came from, and ``others``: ``{(run name, seed): [(result, file), ...]}``, runs of the same row
    and seed trained as another design or budget (ECRE's row 4 at loss weights 1 and 0.1)."""

    def __init__(self):
        super().__init__()
        self.sources = {}
        self.others = {}

    def candidates(self, key) -> list:
        """``[(result, file), ...]`` committed for ``key``, the first file's first."""
        return [(self[key], self.sources.get(key))] + self.others.get(key, []) if key in self else []


def committed_runs(paths) -> CommittedRuns:
    """The runs of one results.json or several (``--committed`` given more than once; None: none);
    a ConfigError naming the file when one is missing or not a sweep's results, or when two files
    hold the same (row, seed) with different scores and the same design and budget records (or
    both none): two runs of one row and seed that recorded different ones are both kept
    (``finished`` picks the one of the row's design and the sweep's budget now)."""
    runs = CommittedRuns()
    for path in [paths] if isinstance(paths, str) else list(paths or ()):
        try:
            with open(path, encoding="utf-8") as f:
                # A list, not a dict by (row, seed): a merged file may hold one row and seed at two budgets.
                entries = [((r["row"], int(r["seed"])), r) for r in json.load(f)["runs"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"--committed {path}: not a sweep's results.json ({err})") from None
        for key, result in entries:
            if key not in runs:
                runs[key], runs.sources[key] = result, path
                continue
            same = [(had, source) for had, source in runs.candidates(key)
                    if (had.get("design"), had.get("settings")) == (result.get("design"), result.get("settings"))]
            if same and same[0][0].get("val_miou") != result.get("val_miou"):
                raise ConfigError(f"--committed {path}: {key[0]} seed {key[1]} scored {result.get('val_miou')} "
                                  f"there and {same[0][0].get('val_miou')} in {same[0][1]}; give one of them")
            if not same:
                runs.others.setdefault(key, []).append((result, path))
    return runs


def finished(row: Row, settings: SweepSettings, seed: int, committed: Optional[dict] = None,
             log=lambda message: None) -> Optional[dict]:
    """The run's result.json (or its entry in ``committed``, ``committed_runs``, under the row's run
    name or one of its ``committed_as`` names), or None if it has not finished; a ConfigError if
    it was trained with other settings than this sweep's (reusing it would mix budgets in one
    table), or a run folder of another design than the row's config now (``design_record``). A
    committed run of another design is not reused (None, said to ``log``); of several committed
    runs of this design, the one of this budget is, and a ConfigError says so when they scored
    differently."""
    path = os.path.join(run_dir(row, settings, seed), RESULT_FILE)
    design = design_record(row_config(row, settings, seed))
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        saved = os.path.join(run_dir(row, settings, seed), "config.yaml")
        if "design" not in result and os.path.isfile(saved):
            result["design"] = design_record(load_config(saved))  # written before designs were recorded
        changed = _design_changes(result, row, settings, seed, design)
        if changed:
            raise ConfigError(f"{path} was trained as another design than {row.config} now ({', '.join(changed)}); "
                              "give this sweep its own --output")
        differ = budget_differences(result, settings)
        if differ:
            raise ConfigError(f"{path} was trained with {', '.join(differ)}; {resume_hint(differ)}")
        return result
    # Under the row's run name, then under the names an earlier sweep committed its design as.
    keys = [(name, seed) for name in (row.run_name, *row.committed_as) if committed and (name, seed) in committed]
    if not keys:
        return None
    candidates = [(result, source, key[0]) for key in keys
                  for result, source in (committed.candidates(key) if isinstance(committed, CommittedRuns)
                                         else [(committed[key], settings.committed)])]
    same, other = [], None
    for result, source, name in candidates:
        label = f"{source} ({name}, seed {seed})"
        changed = (_design_changes(result, row, settings, seed, design) if name == row.run_name
                   else _alias_design_changes(result, row, name, settings, seed, design))
        if changed:
            other = other or (label, changed)
        else:
            # Named by the row that reuses it, so the report's results.json lists it under this row.
            same.append((label, result if name == row.run_name else dict(result, row=row.run_name)))
    if not same:
        # The row's config has changed since those runs (e.g. row 6's DAP placement): another
        # design neither counts as this row's run nor pairs with its runs; train it anew.
        log(f"{other[0]} is another design than {row.config} now ({', '.join(other[1])}): not reused")
        return None
    fitting = [(label, result) for label, result in same if not budget_differences(result, settings)]
    if len({result.get("val_miou") for _, result in fitting}) > 1:
        raise ConfigError(f"{' and '.join(label for label, _ in fitting)} are runs of one design and budget that "
                          f"scored {', '.join(str(result.get('val_miou')) for _, result in fitting)}; give one of them")
    if not fitting:
        label, result = same[0]
        differ = budget_differences(result, settings)
        raise ConfigError(f"{label} was trained with {', '.join(differ)}; {resume_hint(differ)}")
    return fitting[0][1]


def _alias_design_changes(result: dict, row: Row, name: str, settings: SweepSettings, seed: int,
                          design: dict) -> list:
    """How a run committed as ``name`` (one of ``row.committed_as``) differs from ``row``'s design:
    it counts only by the design it recorded, and that record must hold every key in which the
    row differs from ``name``'s own config (a run that recorded no design, or not that key, was
    ``name``'s config as far as anyone can tell)."""
    recorded = result.get("design")
    if not recorded:
        return [f"no design recorded for {name}"]
    plain = dataclasses.replace(settings, overrides=budget_overrides(settings.overrides))
    own = design_record(row_config(dataclasses.replace(row, config=f"{name}.yaml", committed_as=()), plain, seed))
    overridden = [key for key in map(_design_key, settings.overrides) if key]
    telling = [key for key in sorted(design) if own.get(key) != design[key]
               or any(key == o or key.startswith(o + ".") for o in overridden)]
    missing = [f"{key}=not recorded (now {design[key]!r})" for key in telling if key not in recorded]
    return missing + design_differences({"design": recorded}, design)


def _design_changes(result: dict, row: Row, settings: SweepSettings, seed: int, design: dict) -> list:
    """``key=old (now new)`` for each way ``result``'s design differs from ``design`` (the row's
    config now, ``design_record``). A run that recorded no design was the row's config with the
    overrides it recorded (compared, not written into the result); a ``model.*``/``train.*``
    override of this sweep that the run's record lacks is a difference too (the run may not have
    had it)."""
    recorded = result.get("design")
    if recorded is None and "overrides" in (result.get("settings") or {}):
        then = dataclasses.replace(settings, overrides=list(result["settings"]["overrides"] or []))
        recorded = design_record(row_config(row, then, seed))
    changed = design_differences({"design": recorded or {}}, design)
    for key in filter(None, map(_design_key, settings.overrides)):
        for name in (name for name in design if name == key or name.startswith(key + ".")):
            if recorded is None or name not in recorded:
                changed.append(f"{name}=not recorded (now {design[name]!r})")
    return changed


def budget_differences(result: dict, settings: SweepSettings) -> list:
    """``key=old (this sweep: new)`` for each budget setting ``result`` was trained with otherwise."""
    wanted = budget_record(settings)
    # A result written before the settings were recorded carries only the steps it ran; one that
    # stopped on its time budget ran fewer than it was given, so its budget is unknown and it
    # matches no sweep (it is never taken for a run of this one).
    had = dict(result.get("settings") or {"steps": result.get("steps_run")})
    if not result.get("settings") and result.get("stopped_by_time_budget"):
        had["steps"] = f"unknown (stopped on its time budget after {result.get('steps_run')} steps)"
    if "overrides" in had:
        had["overrides"] = budget_overrides(had["overrides"] or [])
    return [f"{key}={had[key]!r} (this sweep: {wanted[key]!r})" for key in had if had[key] != wanted.get(key)]


def resume_hint(differences: list) -> str:
    """What to do about a finished run of another budget (``budget_differences``)."""
    if any(d.startswith("steps='unknown") for d in differences):
        return "no settings resume a run whose budget is unknown: give this sweep its own --output"
    return "give this sweep its own --output, or the finished runs' settings to resume them"


def with_backbone_weights(cfg: Config, weights: Optional[str]) -> Config:
    """``cfg`` with ``model.backbone.weights`` replaced."""
    backbone = dataclasses.replace(cfg.model.backbone, weights=weights)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone))


def with_presence_pretraining(cfg: Config, row: Row, steps: int, directory: str, verbose: int = 2):
    """(``cfg`` with the backbone its row's presence pretraining gives, that pretraining's result):
    pretrains in ``directory`` (or reuses a finished one of the same length), with SS if the row
    has it."""
    import keras

    pretraining = pretrain_presence(pretraining_config(cfg, row.ss_pretraining, steps), directory, verbose)
    keras.backend.clear_session()
    return with_backbone_weights(cfg, pretraining["backbone"]), pretraining


def model_cost(cfg: Config, model) -> tuple[int, float]:
    """(parameters, forward GFLOPs at the dataset's crop size) of the row's trained segmentation model."""
    from exfuse_keras.summary import count_flops

    size = cfg.data.crop_size
    return int(model.count_params()), sum(count_flops(model, size, size).values()) / 1e9


def validation_curve(directory: str, steps_per_epoch: int) -> list:
    """``[[steps, val mIoU], ...]`` from the run's history.csv (one point per epoch)."""
    import csv

    path = os.path.join(directory, "history.csv")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    key = next((k for k in ("val_logits_miou", "val_miou") if rows and k in rows[0]), None)
    if key is None:
        return []
    return [[(int(r["epoch"]) + 1) * steps_per_epoch, float(r[key])] for r in rows]


def sized_row_config(row: Row, settings: SweepSettings, seed: int) -> tuple[Config, list]:
    """(the run's config with its ``auto`` sizes measured, the lines that say what was chosen): a
    folder dataset's ``data.crop_size: auto`` is needed as a number by the pretraining, the
    training, the FLOPs count and the result's ``eval_size`` alike, so it is measured once per run.
    A run that resumes keeps the numbers its ``config.yaml`` recorded (``sized_by_data``)."""
    from exfuse_keras.training.run import sized_by_data

    return sized_by_data(row_config(row, settings, seed), run_dir(row, settings, seed))


def run_one(row: Row, settings: SweepSettings, seed: int, verbose: int = 2, cfg: Optional[Config] = None) -> dict:
    """Pretrains (if the sweep does), trains and evaluates one (row, seed); writes result.json.
    ``cfg``: the run's ``sized_row_config``, when the caller has measured it already."""
    import keras

    import exfuse_keras.layers  # noqa: F401  (registers the custom layers for loading)
    from exfuse_keras.evaluation.evaluate import evaluate
    from exfuse_keras.training.run import train

    cfg = cfg if cfg is not None else sized_row_config(row, settings, seed)[0]
    directory = run_dir(row, settings, seed)
    pretraining = None
    if settings.pretrain == "presence":
        cfg, pretraining = with_presence_pretraining(cfg, row, settings.pretrain_steps,
                                                     pretraining_dir(cfg, row, settings, seed), verbose)
    trained = train(cfg, directory, "auto", verbose=verbose)
    model = keras.models.load_model(os.path.join(directory, "last.keras"), compile=False)
    scores = evaluate(cfg, model, "val", progress=False)
    params, gflops = model_cost(cfg, model)
    keras.backend.clear_session()
    result = {"row": row.run_name, "seed": seed, "modules": row_modules(row),
              "val_miou": scores["miou"], "val_boundary_miou": scores["boundary_miou"],
              "per_class_iou": [None if v != v else float(v) for v in scores["iou"]],
              "confusion_matrix": scores["confusion_matrix"].tolist(),
              "train_seconds": trained["train_seconds"], "steps_run": trained["steps_run"],
              "stopped_by_time_budget": trained["stopped_by_time_budget"],
              "pretraining_seconds": pretraining["seconds"] if pretraining else None,
              "params": params, "gflops": gflops, "eval_size": cfg.data.crop_size,
              "val_miou_curve": validation_curve(directory, cfg.train.steps_per_epoch), "cpu": cpu_record(),
              "settings": budget_record(settings), "design": design_record(cfg)}
    with open(os.path.join(directory, RESULT_FILE), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def add_confusion_matrix(row: Row, settings: SweepSettings, seed: int) -> Optional[dict]:
    """Adds the val confusion matrix to a finished run folder's result.json that lacks it (runs
    from before it was recorded), from the run's last.keras, the model its scores came from.

    Returns the updated result, or None when the folder has no result.json or already holds a
    matrix. A ConfigError when last.keras is missing or scores another val mIoU than the result
    (by more than 1e-4: not the model that was scored).
    """
    import keras

    import exfuse_keras.layers  # noqa: F401  (registers the custom layers for loading)
    from exfuse_keras.atomic import atomic_write
    from exfuse_keras.evaluation.evaluate import evaluate

    directory = run_dir(row, settings, seed)
    path = os.path.join(directory, RESULT_FILE)
    result = finished(row, settings, seed)
    if result is None or "confusion_matrix" in result:
        return None
    weights = os.path.join(directory, "last.keras")
    if not os.path.isfile(weights):
        raise ConfigError(f"{weights}: missing, so {path} cannot gain its confusion matrix")
    model = keras.models.load_model(weights, compile=False)
    scores = evaluate(row_config(row, settings, seed), model, "val", progress=False)
    keras.backend.clear_session()
    if abs(scores["miou"] - result["val_miou"]) > 1e-4:
        raise ConfigError(f"{weights} scores val mIoU {scores['miou']:.6f}, its {RESULT_FILE} {result['val_miou']:.6f}: "
                          "not the model that was scored")
    result["confusion_matrix"] = scores["confusion_matrix"].tolist()
    atomic_write(path, json.dumps(result, indent=2))
    return result


def run_sweep(rows: Sequence[Row], settings: SweepSettings, verbose: int = 2, log=print,
              report_only: bool = False) -> dict:
    """Runs every (row, seed) not yet finished, printing a line per run and the sweep's ETA.

    Returns ``{(run_name, seed): result}`` for every finished run of ``rows`` (with
    ``report_only``, trains nothing and returns those finished so far).
    """
    runs, seen = [], set()
    for seed in range(settings.seeds):
        for row in rows:
            if (row.run_name, seed) not in seen:
                seen.add((row.run_name, seed))
                runs.append((row, seed))
    committed = committed_runs(settings.committed)
    results, spent, trained = {}, 0.0, 0
    for index, (row, seed) in enumerate(runs, 1):
        done = finished(row, settings, seed, committed, log)
        tag = f"[{index}/{len(runs)}] {row.run_name} seed {seed}"
        if done is not None:
            log(f"{tag}: finished before, skipped (val mIoU {done['val_miou']:.4f})")
            results[(row.run_name, seed)] = done
            continue
        if report_only:
            log(f"{tag}: not finished yet, left out of the report")
            continue
        # The crop is the one the run trains at, after the preset and --set (the cpu preset's 128
        # overrides a dataset's own crop_size) and measured if auto, so a launch at the wrong size
        # shows in its first line.
        cfg, sized = sized_row_config(row, settings, seed)
        crop = cfg.data.crop_size
        log(f"{tag}: training ({settings.steps} steps of batch {cfg.train.batch_size}, {crop} × {crop} crops)"
            + "".join(f"; {line}" for line in sized))
        started = time.perf_counter()
        result = run_one(row, settings, seed, verbose, cfg)
        spent, trained = spent + time.perf_counter() - started, trained + 1
        left = sum(1 for r, s in runs[index:] if finished(r, settings, s, committed) is None)
        log(f"{tag}: val mIoU {result['val_miou']:.4f}, boundary mIoU {result['val_boundary_miou']:.4f}, "
            f"{time.perf_counter() - started:.0f} s; sweep ETA {spent / trained * left / 60:.1f} min ({left} runs left)")
        results[(row.run_name, seed)] = result
    return results
