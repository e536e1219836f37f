"""Optimiser: SGD with momentum (or AdamW), poly decay after linear warm-up, weight decay
that skips BatchNorm parameters and biases, learning rate scaled with the global batch."""

from __future__ import annotations

import keras
from keras import ops

# Variable names that weight decay leaves alone: biases and BatchNorm's gamma/beta.
NO_DECAY = ("bias", "gamma", "beta")


@keras.saving.register_keras_serializable(package="exfuse")
class PolyWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """``lr(t) = peak * t / warmup`` for ``t < warmup``, then
    ``peak * (1 - (t - warmup) / (total - warmup)) ** power``, and 0 from ``total`` on.

    With a ``clock`` (a scalar variable that ``TimeBudget`` advances with wall-clock time,
    in steps), ``t`` is ``max(step, clock)``: the schedule runs on whichever of steps and
    time is further along, so a run with a time budget still finishes its decay on a slow
    machine instead of being cut at a high learning rate.

    Args:
        peak: the learning rate reached at the end of warm-up.
        total_steps: steps of the whole run.
        warmup_steps: linear warm-up steps (0 for none).
        power: the poly exponent (0.9, as in DeepLab and the GCN paper).
        clock: optional float32 scalar variable, the time-equivalent step (runtime state:
            not part of the config, so a reloaded schedule is step-driven).
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, power: float = 0.9, clock=None):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(warmup_steps, max(total_steps - 1, 0)))
        self.power = float(power)
        self.clock = clock

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.clock is not None:
            step = ops.maximum(step, ops.cast(self.clock, "float32"))
        warmup = float(self.warmup_steps)
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
        decayed = self.peak * ops.power(1.0 - progress, self.power)
        if self.warmup_steps == 0:
            return decayed
        return ops.where(step < warmup, self.peak * step / warmup, decayed)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "power": self.power}


def scaled_learning_rate(cfg) -> float:
    """``train.learning_rate`` is for ``train.reference_batch_size``; scale linearly to the global batch."""
    return cfg.train.learning_rate * cfg.train.batch_size / cfg.train.reference_batch_size


def learning_rate_clock(cfg):
    """The clock variable of a ``train.budget_mode: anneal`` run with a time budget, else None.
    Create it in the strategy's scope; ``TimeBudget`` advances it, the schedule reads it."""
    if cfg.train.max_train_seconds and cfg.train.budget_mode == "anneal":
        return keras.Variable(0.0, dtype="float32", trainable=False, name="learning_rate_clock")
    return None


def build_optimizer(cfg, total_steps: int, clock=None) -> keras.optimizers.Optimizer:
    """SGD or AdamW on the poly schedule (driven by ``clock`` too, when given)."""
    t = cfg.train
    schedule = PolyWithWarmup(scaled_learning_rate(cfg), total_steps, t.warmup_steps, t.poly_power, clock=clock)
    if t.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=t.momentum, weight_decay=t.weight_decay or None)
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=t.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer
