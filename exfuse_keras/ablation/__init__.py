"""The ablation study of the paper's Table 3 and Table 4 as one command.

    python -m exfuse_keras.ablation --table all --config-set cpu --data configs/data/scenes_128.yaml \
        --seeds 2 --steps 4000 --pretrain-steps 1000 --output runs/ablation4000

``rows.py``: the rows and size presets; ``presence.py``: semantic supervision as backbone
pretraining on built-in data; ``sweep.py``: one run directory per (row, seed), resumable;
``report.py``: results.json, table.md and the plot. docs/ablation.md holds a measured sweep.
"""

from exfuse_keras.ablation.rows import PRESETS, TABLE3, TABLE4, Row, rows_for
from exfuse_keras.ablation.sweep import SweepSettings, run_sweep

__all__ = ["Row", "TABLE3", "TABLE4", "PRESETS", "rows_for", "SweepSettings", "run_sweep"]
