"""The rows of the paper's Table 3 and Table 4, and the size presets that run them.

Each row is one config under ``configs/ablation/`` (the paper's switches on a ResNeXt-101 for
VOC) and the paper's single-scale VOC 2012 val mIoU. A run's config is the row's, then the
dataset's (``--data``, e.g. ``configs/data/scenes.yaml``), then the size preset's overrides:

- ``paper``: the rows as shipped (ResNeXt-101; SS rows name their SS-pretrained weights).
- ``cpu``: the quick-start-size network (stage width 8, plain ResNet blocks, GCN k = 7) with
  each row's switches kept; block counts divided by 4 (at least 1), so the standard
  {3, 4, 23, 3} becomes {1, 1, 6, 1} and the rearranged {8, 8, 9, 8} becomes {2, 2, 2, 2}
  (LR moves depth from res4 to the early stages, as in the paper); 128x128 crops, batch 8,
  AdamW.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "configs", "ablation")


@dataclasses.dataclass(frozen=True)
class Row:
    """One ablation row.

    Attributes:
        key: the row's name in tables and run folders.
        table: ``"3"`` or ``"4"``.
        label: what the row adds, in the paper's words.
        config: file under ``configs/ablation/``; rows naming the same file share their runs.
        paper_miou: the paper's VOC 2012 val mIoU (None for our experimental row).
        ss_pretraining: whether the backbone is pretrained with semantic supervision.
        experimental: not in the paper.
        reference: the key of the row (same table) this row's claim is an increment over, as the
            paper reads it: SS = #2 - #1, LR = #3 - #2, ECRE = #4 - #3, SEB = #5 - #3,
            DAP = #6 - #5, ECRE again = #7 - #6; Table 4's rows against its baseline (None for a
            reference row).
        claim: the module whose increment the row measures, in words (the verdict table's).
        committed_as: other run names under which earlier sweeps committed runs of this row's
            design (row 4 trained with ``--set train.ecre_loss_weight=0.1`` is committed as
            ``row4_ecre``); a sweep reuses those whose design record is this row's.
    """

    key: str
    table: str
    label: str
    config: str
    paper_miou: Optional[float]
    ss_pretraining: bool
    experimental: bool = False
    reference: Optional[str] = None
    claim: str = ""
    committed_as: tuple = ()

    @property
    def run_name(self) -> str:
        return os.path.splitext(self.config)[0]


TABLE3 = (
    Row("1", "3", "GCN baseline", "row1_gcn_baseline.yaml", 76.0, False),
    Row("2", "3", "+ SS", "row2_ss.yaml", 77.5, True, reference="1", claim="SS"),
    Row("3", "3", "+ SS + LR", "row3_ss_lr.yaml", 78.3, True, reference="2", claim="LR"),
    Row("4", "3", "#3 + ECRE", "row4_ecre.yaml", 78.8, True, reference="3", claim="ECRE (on #3)"),
    Row("5", "3", "#3 + SEB", "row5_seb.yaml", 79.0, True, reference="3", claim="SEB"),
    Row("6", "3", "#5 + DAP", "row6_seb_dap.yaml", 79.6, True, reference="5", claim="DAP"),
    Row("7", "3", "#6 + ECRE (ExFuse)", "row7_exfuse.yaml", 80.0, True, reference="6", claim="ECRE (on #6)"),
    Row("8", "3", "#7, SEB iterated twice (ours)", "row8_recurrent_seb.yaml", None, True, experimental=True,
        reference="7", claim="SEB iterated (ours)"),
)
TABLE4 = (
    Row("baseline", "4", "deconvolution (Table 3 #3)", "row3_ss_lr.yaml", 78.3, True),
    Row("deconv+sup", "4", "deconvolution + supervised", "table4_deconv_supervised.yaml", 78.2, True,
        reference="baseline", claim="ECRE's supervision alone"),
    Row("subpixel", "4", "sub-pixel upsampling only", "table4_subpixel_only.yaml", 77.6, True,
        reference="baseline", claim="sub-pixel upsampling alone"),
    Row("ECRE", "4", "ECRE (sub-pixel + supervised; Table 3 #4)", "row4_ecre.yaml", 78.8, True,
        reference="baseline", claim="ECRE"),
)
# Where DAP's C*k^2 votes come from (model.dap.placement; the paper does not say), each against
# Table 3's row 5: row 6 as published (DAP, then the final refinement: row 5's depth), and DAP in
# place of the final refinement (the placement before it was measured). Not the paper's table.
TABLE_DAP = (
    Row("5", "dap", "#3 + SEB (Table 3 #5)", "row5_seb.yaml", 79.0, True),
    Row("6", "dap", "#5 + DAP, then the final BR (Table 3 #6)", "row6_seb_dap.yaml", 79.6, True,
        reference="5", claim="DAP, final BR kept"),
    Row("6-noBR", "dap", "#5 + DAP in place of the final BR", "dap_without_final_br.yaml", None, True,
        experimental=True, reference="5", claim="DAP replacing the final BR"),
    # The two placements against each other, paired by seed: the same runs as 6-noBR, nothing new
    # to train; it decides model.dap.placement's default.
    Row("6-noBR*", "dap", "#6 without its final BR (6-noBR's runs, against #6)", "dap_without_final_br.yaml",
        None, True, experimental=True, reference="6", claim="the final BR after DAP, removed"),
)
# How ECRE's auxiliary target is built (train.ecre_target; the paper says "labels at that
# resolution") and how much its loss weighs (train.ecre_loss_weight), each on Table 3's row 4
# against row 3.
TABLE_ECRE = (
    Row("3", "ecre", "+ SS + LR (Table 3 #3)", "row3_ss_lr.yaml", 78.3, True),
    Row("4", "ecre", "#3 + ECRE, nearest labels (Table 3 #4)", "row4_ecre.yaml", 78.8, True,
        reference="3", claim="ECRE, nearest target"),
    Row("4-soft", "ecre", "#3 + ECRE, class shares per cell", "ecre_soft_target.yaml", None, True,
        experimental=True, reference="3", claim="ECRE, soft target"),
    Row("4-upsampled", "ecre", "#3 + ECRE, logits upsampled to the labels", "ecre_upsampled_target.yaml", None,
        True, experimental=True, reference="3", claim="ECRE, upsampled logits"),
    # Each other target against today's nearest one, paired by seed: the same runs, nothing new to
    # train; they decide train.ecre_target's default.
    Row("4-soft*", "ecre", "#4 with the soft target (4-soft's runs, against #4)", "ecre_soft_target.yaml", None,
        True, experimental=True, reference="4", claim="soft target, against nearest"),
    Row("4-upsampled*", "ecre", "#4 with upsampled logits (4-upsampled's runs, against #4)",
        "ecre_upsampled_target.yaml", None, True, experimental=True, reference="4",
        claim="upsampled logits, against nearest"),
    # The nearest target at a tenth of the loss weight, against row 3 and against weight 1 (the
    # paper's plain sum of the losses); earlier sweeps trained it as row 4 with --set.
    Row("4-w0.1", "ecre", "#3 + ECRE, nearest labels, loss weight 0.1", "ecre_loss_weight_0.1.yaml", None, True,
        experimental=True, reference="3", claim="ECRE, loss weight 0.1", committed_as=("row4_ecre",)),
    Row("4-w0.1*", "ecre", "#4 at loss weight 0.1 (4-w0.1's runs, against #4)", "ecre_loss_weight_0.1.yaml", None,
        True, experimental=True, reference="4", claim="loss weight 0.1, against 1", committed_as=("row4_ecre",)),
)
# Positive controls (not the paper's): does the benchmark test what it claims? Each against Table
# 3's row 1. A model that cannot see a context object's surroundings should lose on the context
# classes (nucleus, boxed) and not on their look-alikes (disc, square); one that predicts at
# stride 8 should lose on the thin classes (wheel, wire, grid). The report gives both class groups.
TABLE_CONTROLS = (
    Row("1", "controls", "GCN baseline (Table 3 #1)", "row1_gcn_baseline.yaml", 76.0, False),
    Row("1-blind", "controls", "#1 scoring res2 alone with GCN k = 1 (context control)", "control_context_blind.yaml",
        None, False, experimental=True, reference="1", claim="context control: res2 only, GCN k = 1"),
    Row("1-stride8", "controls", "#1 predicting at stride 8 (resolution control)", "control_stride8.yaml", None,
        False, experimental=True, reference="1", claim="resolution control: stride 8"),
)
TABLES = {"3": TABLE3, "4": TABLE4, "dap": TABLE_DAP, "ecre": TABLE_ECRE, "controls": TABLE_CONTROLS}
PRESETS = ("paper", "cpu")
# The --quick smoke run: two rows of Table 3.
QUICK_ROWS = (TABLE3[0], TABLE3[6])

PAPER_GCN_KERNEL, CPU_GCN_KERNEL = 15, 7
# The cpu preset's network and recipe (the quick start's, at 128x128 crops of the 256x256 scenes).
_CPU_OVERRIDES = (
    "model.backbone.cardinality=1", "model.backbone.base_width=64", "model.backbone.base_channels=8",
    "model.backbone.stem_channels=16", "model.backbone.convention=torchvision",
    "model.backbone.preprocessing=scale", "model.backbone.norm=batch", "model.backbone.weights=null",
    "model.backbone.zero_init_residual=false",
    "model.gcn_init_scale=1.0", "model.ss.channels=32",
    "data.crop_size=128",
    "train.batch_size=8", "train.reference_batch_size=8", "train.optimizer=adamw", "train.learning_rate=0.005",
    "train.weight_decay=0.0001", "train.warmup_steps=100", "train.val_batch_size=8",
)


def rows_for(table: str) -> tuple:
    """The rows of ``table`` (``"3"``, ``"4"``, ``"dap"``, ``"ecre"``, ``"controls"`` or ``"all"``: Tables 3
    and 4), in order; several tables as a comma list (``"all,ecre"``), so that one report pools the
    seed noise of all their comparisons."""
    rows = []
    for name in (part.strip() for part in table.split(",")):
        if name != "all" and name not in TABLES:
            raise ValueError(f"--table must be 3, 4, dap, ecre, controls or all (or a comma list of them), "
                             f"got {name!r}")
        rows += [row for row in (TABLE3 + TABLE4 if name == "all" else TABLES[name]) if row not in rows]
    return tuple(rows)


def scaled_blocks(blocks) -> list:
    """The cpu preset's block counts: each stage's divided by 4, rounded, at least 1."""
    return [max(1, int(round(b / 4))) for b in blocks]


def preset_overrides(preset: str, blocks, gcn_kernel: int = PAPER_GCN_KERNEL) -> list:
    """The dotted overrides a size preset applies to a row whose backbone has ``blocks`` and whose
    GCN has ``gcn_kernel``. The cpu preset scales the paper's k = 15 to 7 for its 128x128 crops; a
    row's other kernel (the context control's 1) is that row's switch and is kept."""
    if preset == "paper":
        return []
    if preset == "cpu":
        kernel = [] if gcn_kernel != PAPER_GCN_KERNEL else [f"model.gcn_kernel={CPU_GCN_KERNEL}"]
        return list(_CPU_OVERRIDES) + kernel + [f"model.backbone.blocks={scaled_blocks(blocks)}"]
    raise ValueError(f"--config-set must be one of {PRESETS}, got {preset!r}")


def modules_on(cfg) -> str:
    """The modules of a row's config as shipped (before a preset scales its blocks), as the paper
    names them, e.g. ``LR+SEB+DAP+ECRE``; SS is a property of the row's pretraining, not listed."""
    m = cfg.model
    parts = []
    if list(m.backbone.blocks) == [8, 8, 9, 8]:
        parts.append("LR")
    if m.seb.enabled:
        parts.append("SEB" if m.seb.iterations == 1 else f"SEBx{m.seb.iterations}")
    if m.dap.enabled:
        parts.append("DAP")
    if m.ecre.enabled and m.ecre.supervised:
        parts.append("ECRE")
    elif m.ecre.enabled:
        parts.append("subpixel")
    elif m.ecre.supervised:
        parts.append("deconv-sup")
    return "+".join(parts) or "-"
