"""Recurrent semantic embedding: the SEB iterated with a bottom-up refinement of the higher
levels. An experimental extension, not in the paper: it tries the idea of enhancing the low- and
high-level features recurrently, each from the other, instead of once top-down."""

import keras

from exfuse_keras.layers.seb import SemanticEmbeddingBranch


@keras.saving.register_keras_serializable(package="exfuse")
class RecurrentSemanticEmbedding(keras.layers.Layer):
    """SEB (Sec. 3.1, Fig. 4) applied ``iterations`` times, each time to refined higher levels.

    With backbone levels ``x_2 .. x_5`` (res2..res5), iteration 1 is the paper's SEB:
    ``e_l = x_l * prod_{h>l} up(conv3x3(x_h))`` for l = 2, 3, 4, with ``r_h = x_h``.
    Each later iteration t first refines every higher level with the level just below it as
    embedded by the previous iteration (bottom-up, like a feature pyramid's second path):
    ``r_h = x_h + conv1x1(avgpool2x2(e_{h-1}))`` for h = 3, 4, 5, then re-embeds the original
    low levels with the refined ones: ``e_l = x_l * prod_{h>l} up(conv3x3(r_h))``, with
    iteration t's own weights. The outputs are ``[e_2, e_3, e_4, r_5]``, so the decoder scores
    the refined res5 too.

    Initialisation: the 1x1 refinement convs start at zero (``refinement_init="zeros"``) and
    the SEB gates at one (``gate_init="identity"``), so an untrained model computes exactly the
    backbone's features, and ``iterations=1`` is exactly ``SemanticEmbeddingBranch`` on res2,
    res3 and res4 (same sublayer names ``seb_res2`` ... for the first iteration). A zero kernel
    passes no gradient to what feeds it, so the first iterations start learning a few steps
    after the last (``refinement_init="glorot_uniform"`` connects them from the first step).

    Cost per extra iteration: one more SEB (its 3x3 convs on every higher level, about 41
    GFLOPs for ExFuse-ResNet-101 at 512x512) and three 1x1 convs (about 1 GFLOP each there).

    Shapes: ``[x_2, x_3, x_4, x_5]`` with ``x_k: [N, H / 2^(k-2), W / 2^(k-2), C_k]`` (each level
    half the size of the one below, rounded up) -> the same four shapes.

    Args:
        iterations (int): number of SEB passes, >= 1.
        gate_init (str): the SEB gates' initialisation, ``"identity"`` or ``"glorot"``.
        refinement_init (str): the 1x1 refinement kernels' Keras initializer, ``"zeros"`` or
            e.g. ``"glorot_uniform"``.

    Example:
        >>> fusion = RecurrentSemanticEmbedding(iterations=2)
        >>> e2, e3, e4, r5 = fusion([res2, res3, res4, res5])           # doctest: +SKIP
    """

    LEVELS = ("res2", "res3", "res4", "res5")

    def __init__(self, iterations=2, gate_init="identity", refinement_init="zeros", **kwargs):
        super().__init__(**kwargs)
        if int(iterations) < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations!r}")
        self.iterations = int(iterations)
        self.gate_init = gate_init
        self.refinement_init = refinement_init
        self.embeddings = []   # per iteration: SEBs for res2, res3, res4
        self.refinements = []  # per iteration after the first: 1x1 convs into res3, res4, res5

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 4:
            raise ValueError(f"{self.name}: expects the four levels [res2, res3, res4, res5]")
        for t in range(self.iterations):
            suffix = "" if t == 0 else f"_iter{t + 1}"
            sebs = []
            for i, level in enumerate(self.LEVELS[:-1]):
                seb = SemanticEmbeddingBranch(gate_init=self.gate_init, name=f"seb_{level}{suffix}",
                                              dtype=self.dtype_policy)
                seb.build([input_shape[i], *input_shape[i + 1:]])
                sebs.append(seb)
            self.embeddings.append(sebs)
            if t > 0:
                convs = []
                for i, level in enumerate(self.LEVELS[1:]):
                    conv = keras.layers.Conv2D(input_shape[i + 1][-1], 1, kernel_initializer=self.refinement_init,
                                               name=f"refine_{level}{suffix}", dtype=self.dtype_policy)
                    conv.build(input_shape[i])
                    convs.append(conv)
                self.refinements.append(convs)

    def call(self, inputs):
        features = list(inputs)
        refined = list(features)
        embedded = None
        for t, sebs in enumerate(self.embeddings):
            if t > 0:
                convs = self.refinements[t - 1]
                refined = [features[0]] + [
                    features[i + 1] + conv(keras.ops.average_pool(embedded[i], 2, 2, padding="same"))
                    for i, conv in enumerate(convs)]
            embedded = [seb([features[i], *refined[i + 1:]]) for i, seb in enumerate(sebs)]
        return [*embedded, refined[-1]]

    def compute_output_shape(self, input_shape):
        return list(input_shape)

    def get_config(self):
        return {**super().get_config(), "iterations": self.iterations, "gate_init": self.gate_init,
                "refinement_init": self.refinement_init}
