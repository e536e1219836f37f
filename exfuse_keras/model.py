"""``build_model``: the ExFuse network of the paper's Fig. 2, assembled from a config.

Top-down, as in the figure: the backbone gives res2..res5; the Semantic Embedding Branch
gates res2..res4 with the semantics of every higher level; a Global Convolution block scores
each level; the decoder starts from res5's scores, upsamples them (sub-pixel with ECRE),
fuses each lower level's refined scores, and upsamples twice more to the input resolution,
where Densely Adjacent Prediction averages each pixel's neighbour votes. Semantic
Supervision heads classify the early stages.

Every module is a config switch, so the GCN baseline and each ablation row of Table 3 and
Table 4 is one YAML file (see configs/).
"""

from __future__ import annotations

import keras

from exfuse_keras.backbones.resnext import STAGES, build_backbone
from exfuse_keras.backbones.weights import load_backbone_weights
from exfuse_keras.config import Config, ModelConfig
from exfuse_keras.layers import (BilinearUpsampling, BilinearUpsamplingInitializer, BoundaryRefinement,
                                 DenselyAdjacentPrediction, DenselyAdjacentUpsampling, GlobalConvolution,
                                 InputNormalization, RecurrentSemanticEmbedding, SemanticEmbeddingBranch,
                                 SemanticSupervisionHead, SubPixelUpsampling)


def _upsample(x, filters: int, mode: str, name: str):
    """The decoder's 2x upsampling: a learned deconvolution (GCN baseline) or bilinear.

    With ``filters`` wider than the input (DAP's C*k^2), bilinear is followed by a 1x1 conv.
    """
    if mode == "deconv":
        return keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=name,
                                            kernel_initializer=BilinearUpsamplingInitializer())(x)
    x = BilinearUpsampling(2, name=name)(x)
    if filters != x.shape[-1]:
        x = keras.layers.Conv2D(filters, 1, name=f"{name}_proj")(x)
    return x


def _float32(x, name: str):
    """Names an output and keeps it float32 under a mixed-precision policy."""
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)


def semantic_supervision(m: ModelConfig, features: dict, num_classes: int) -> dict:
    """Sec. 3.1's Semantic Supervision: a ``SemanticSupervisionHead`` on each stage of
    ``m.ss.levels``, its stride-2 blocks reaching res5's resolution (res2: 3, res3: 2, res4: 1).

    Shared by ``build_model`` (class-presence targets) and ImageNet pretraining (the image's class).

    Args:
        m: the model section (``ss.levels``, ``ss.channels``; ``backbone.norm`` ``sync_batch``
            synchronises the heads' BatchNorm too).
        features: the backbone's ``{"res2": ..., "res5": ...}`` outputs.
        num_classes: the classifier outputs.

    Returns:
        ``{"ss_<level>": [N, num_classes] logits, float32}``.
    """
    outputs = {}
    for level in m.ss.levels:
        downsamples = len(STAGES) - 1 - STAGES.index(level)
        head = SemanticSupervisionHead(num_classes, downsamples, m.ss.channels,
                                       synchronized=m.backbone.norm == "sync_batch", name=f"ss_head_{level}")
        outputs[f"ss_{level}"] = _float32(head(features[level]), f"ss_{level}")
    return outputs


def build_model(cfg: Config, name: str = "exfuse") -> keras.Model:
    """Builds ExFuse (or any ablation of it) as a functional ``keras.Model``.

    Input: ``"image"``, RGB float values in [0, 255], ``[N, H, W, 3]`` with H and W
    multiples of 32 (any such size). Outputs, a dict:

    - ``"logits"``: ``[N, H, W, num_classes]`` class scores, float32.
    - ``"ecre"`` (when ``model.ecre.supervised``): ``[N, H/16, W/16, num_classes]``.
    - ``"ss_res2"``, ``"ss_res3"``, ``"ss_res4"`` (those in ``model.ss.levels``):
      ``[N, num_classes]`` class-presence logits.

    Args:
        cfg (Config): the full config; reads its ``model`` section and ``data.num_classes``.
            ``model.backbone.weights`` (``"imagenet"`` or a file) is loaded into the backbone.
        name (str): the model's name.

    Returns:
        keras.Model: uncompiled; ``exfuse_keras.losses.build_losses`` gives its losses.

    Example::

        from exfuse_keras import build_model, load_config

        cfg = load_config("configs/exfuse_resnet101.yaml", ["model.backbone.weights=null"])
        model = build_model(cfg)
        outputs = model(images)                # images: float32 [N, 512, 512, 3], RGB 0-255
        outputs["logits"].shape                # (N, 512, 512, 21)
    """
    m = cfg.model
    num_classes = cfg.data.num_classes
    image = keras.Input((None, None, 3), name="image")
    x = InputNormalization(m.backbone.resolved_preprocessing, name="normalization")(image)
    if m.backbone.architecture == "resnet":
        backbone = build_backbone(m.backbone)
        if m.backbone.weights:
            load_backbone_weights(backbone, m.backbone)
    else:
        from exfuse_keras.backbones.mobilenet import build_mobilenet_backbone

        backbone = build_mobilenet_backbone(m.backbone)  # with its weights: downloaded or a local .h5
    features = backbone(x)

    # Encoder side: SEB multiplies each low level by the upsampled semantics of all higher ones.
    embedded = dict(features)
    if m.seb.enabled and m.seb.iterations > 1:
        # Experimental: SEB repeated, the higher levels refined bottom-up between passes.
        fusion = RecurrentSemanticEmbedding(m.seb.iterations, m.seb.gate_init, name="recurrent_seb")
        embedded = dict(zip(STAGES, fusion([features[level] for level in STAGES])))
    elif m.seb.enabled:
        for i, level in enumerate(STAGES[:-1]):
            higher = [features[h] for h in STAGES[i + 1:]]
            seb = SemanticEmbeddingBranch(gate_init=m.seb.gate_init, name=f"seb_{level}")
            embedded[level] = seb([features[level], *higher])

    levels = [level for level in STAGES if level in m.decoder_levels]  # low to high
    scores = {level: GlobalConvolution(num_classes, m.gcn_kernel, m.gcn_init_scale, name=f"gcn_{level}")(
                  embedded[level])
              for level in levels}

    # Decoder side, top-down from res5 (stride 32) to the input resolution.
    outputs = {}
    top = levels[-1]
    s = BoundaryRefinement(num_classes, name=f"br_{top}")(scores[top])
    for higher, level in zip(reversed(levels), reversed(levels[:-1])):
        # From `higher`'s stride to `level`'s (2x per stage), then `level`'s refined scores fused in.
        for step in range(STAGES.index(higher) - STAGES.index(level)):
            if higher == "res5" and step == 0 and m.ecre.enabled:
                s = SubPixelUpsampling(num_classes, block_size=2, name="ecre_subpixel")(s)
            else:
                s = _upsample(s, num_classes, m.upsampling, name=f"up_{higher}" + (f"_{step}" if step else ""))
            if higher == "res5" and step == 0 and m.ecre.supervised:
                outputs["ecre"] = _float32(s, "ecre")
        lateral = BoundaryRefinement(num_classes, name=f"br_{level}")(scores[level])
        s = keras.layers.Add(name=f"fuse_{level}")([s, lateral])
        s = BoundaryRefinement(num_classes, name=f"br_fused_{level}")(s)
    if levels[0] != "res2":
        # A positive control (ModelConfig): the lowest level's scores, resized to the input.
        s = BilinearUpsampling(2 ** (STAGES.index(levels[0]) + 2), name="predict_upsampling")(s)
    else:
        s = _upsample(s, num_classes, m.upsampling, name="up_stride2")
        s = BoundaryRefinement(num_classes, name="br_stride2")(s)
        if m.dap.enabled and m.dap.placement != "refinement" and m.upsampling == "deconv":
            # The deconvolution to C*k^2 votes and DAP, computed as one (the same function and weights).
            s = DenselyAdjacentUpsampling(num_classes, m.dap.kernel, name="dap")(s)
        elif m.dap.enabled:
            votes = num_classes * m.dap.kernel ** 2
            s = _upsample(s, votes, m.upsampling, name="up_stride1")
            if m.dap.placement == "refinement":
                s = BoundaryRefinement(votes, name="br_stride1")(s)
            s = DenselyAdjacentPrediction(m.dap.kernel, name="dap")(s)
        if m.dap.enabled and m.dap.placement == "upsampling_br":
            # The decoder's final refinement kept, on DAP's averaged C-channel scores: the same depth
            # as the decoder without DAP, so that DAP's row differs from its reference by DAP alone.
            s = BoundaryRefinement(num_classes, name="br_stride1")(s)
        elif not m.dap.enabled:
            s = _upsample(s, num_classes, m.upsampling, name="up_stride1")
            s = BoundaryRefinement(num_classes, name="br_stride1")(s)
    outputs["logits"] = _float32(s, "logits")

    outputs.update(semantic_supervision(m, features, num_classes))

    ordered = {key: outputs[key] for key in ("logits", "ecre", "ss_res2", "ss_res3", "ss_res4") if key in outputs}
    return keras.Model(image, ordered, name=name)
