"""Typed configuration: dataclass sections, YAML loading, dotted overrides, validation.

A run is described by one YAML file whose top-level sections are ``model``, ``data``,
``train``, ``eval`` and ``export``. Every key has a default here, so a YAML file lists only
what it changes. ``load_config`` rejects unknown keys (with a close-match suggestion), wrong
types and out-of-range values with one line that names the file and the key; the resolved
config is written next to every run with ``save_config`` so the run can be reproduced.

A file may start from another with ``base: other.yaml`` (a path relative to the file, or a
list of them); its sections are merged key by key under the file's own.

Example::

    cfg = load_config("configs/exfuse_resnet101.yaml", ["train.batch_size=16"])
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import yaml

__all__ = [
    "BackboneConfig", "InitConfig", "SEBConfig", "ECREConfig", "DAPConfig", "SSConfig", "ModelConfig",
    "FolderConfig", "CocoConfig", "MixComponent", "ImageNetConfig", "SyntheticConfig", "DataConfig", "TrainConfig",
    "EvalConfig",
    "ExportConfig", "Config", "ConfigError",
    "load_config", "load_config_stack", "config_from_dict", "save_config", "config_to_dict",
]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
SS_LEVELS = ("res2", "res3", "res4")
DECODER_LEVELS = ("res2", "res3", "res4", "res5")
# Values of data.dataset; exfuse_keras/data/pipeline.py maps each to its reader. "mix" combines
# the others (data.mix).
DATASETS = ("voc", "train_aug", "shapes", "scenes", "folder", "coco_voc", "mix")
# The network's output stride (res5's): a network input's height and width are multiples of it.
OUTPUT_STRIDE = 32


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the source and the key."""


@dataclass
class BackboneConfig:
    """The encoder: ResNet / ResNeXt v1 bottlenecks (docs/design.md, "LR"), or MobileNetV3 for phones.

    ``architecture``: ``resnet`` (ResNet / ResNeXt, every field below applies) or
    ``mobilenetv3_large`` / ``mobilenetv3_small`` (keras.applications' MobileNetV3 tapped at
    strides 4-32, ``exfuse_keras/backbones/mobilenet.py``; ``alpha`` is its width multiplier,
    ``minimalistic`` its variant without hard-swish, squeeze-excite and 5x5 kernels (every int8
    op then runs in TFLite's XNNPACK), ``weights`` null, ``imagenet`` or an ``.h5`` file; the
    block, width and convention fields do not apply and layer rearrangement is refused).
    ``bn_momentum`` is every backbone BatchNorm's moving-average momentum, MobileNetV3's included
    (keras.applications' own 0.999 lags too far behind a network trained from scratch).

    ``blocks`` is the number of bottleneck blocks per stage: ``[3, 4, 23, 3]`` is the standard
    101-layer arrangement and ``[8, 8, 9, 8]`` the paper's layer rearrangement (LR).
    ``cardinality`` x ``base_width`` is the grouped width of the first stage (ResNeXt 32x4d:
    32 and 4; ResNet: 1 and 64). ``base_channels`` is the stage-1 width before the 4x
    expansion (64 for every ImageNet model; smaller for the quick-start model).
    ``zero_init_residual`` starts the last BatchNorm scale of every block's residual branch at
    zero (Goyal et al. 2017; torchvision's ``zero_init_residual``, Model Garden's
    ``zero_gamma``), so a randomly initialised block is its shortcut and the activations of a
    deep stack do not grow with its depth; loaded weights replace it. Off in the tiny presets
    (the quick start, the ablation's ``cpu`` preset), which were measured without it.
    """

    architecture: Literal["resnet", "mobilenetv3_large", "mobilenetv3_small"] = "resnet"
    alpha: float = 1.0
    minimalistic: bool = False
    blocks: list[int] = field(default_factory=lambda: [3, 4, 23, 3])
    cardinality: int = 32
    base_width: int = 4
    base_channels: int = 64
    stem_channels: int = 64
    convention: Literal["torchvision", "keras"] = "torchvision"
    norm: Literal["batch", "sync_batch", "frozen"] = "batch"
    bn_momentum: float = 0.99
    weights: Optional[str] = None
    preprocessing: Literal["auto", "caffe", "torch", "scale"] = "auto"
    zero_init_residual: bool = True

    def validate(self, where: str) -> None:
        if self.architecture != "resnet":
            self._validate_mobile(where)
            return
        if self.alpha != 1.0 or self.minimalistic:
            _fail(where, "model.backbone.alpha" if self.alpha != 1.0 else "model.backbone.minimalistic",
                  "is a MobileNetV3 setting; a ResNet's widths are base_channels and base_width",
                  self.alpha if self.alpha != 1.0 else self.minimalistic)
        if len(self.blocks) != 4 or any(b < 1 for b in self.blocks):
            _fail(where, "model.backbone.blocks", "must be four positive block counts (res2..res5)", self.blocks)
        for key in ("cardinality", "base_width", "base_channels", "stem_channels"):
            _positive(where, f"model.backbone.{key}", getattr(self, key))
        if self.base_channels * self.base_width < 64:
            _fail(where, "model.backbone.base_width",
                  "times base_channels must be at least 64 (each group needs a channel: "
                  "width = base_channels * base_width / 64 per group)", self.base_width)
        if not 0.0 < self.bn_momentum < 1.0:
            _fail(where, "model.backbone.bn_momentum", "must be in (0, 1)", self.bn_momentum)
        if self.weights is not None and self.weights != "imagenet":
            if not self.weights.endswith((".h5", ".keras", ".weights.h5")):
                _fail(where, "model.backbone.weights",
                      "must be null, 'imagenet' or a path to a .h5/.keras file", self.weights)
        if self.weights == "imagenet":
            if self.convention != "keras" or self.cardinality != 1 or self.base_width != 64 \
                    or self.base_channels != 64 or self.stem_channels != 64 \
                    or self.blocks not in ([3, 4, 6, 3], [3, 4, 23, 3], [3, 8, 36, 3]):
                _fail(where, "model.backbone.weights",
                      "'imagenet' exists only for keras-convention ResNet-50/101/152 "
                      "(blocks [3,4,6,3], [3,4,23,3] or [3,8,36,3], cardinality 1, base_width 64)",
                      self.weights)

    def _validate_mobile(self, where: str) -> None:
        if self.blocks != [3, 4, 23, 3]:
            _fail(where, "model.backbone.blocks", f"(layer rearrangement) applies to ResNet/ResNeXt backbones "
                  f"only, not {self.architecture}; remove it", self.blocks)
        if self.norm != "batch":
            _fail(where, "model.backbone.norm", f"must be 'batch' for {self.architecture} (keras.applications' "
                  "BatchNormalization)", self.norm)
        if self.preprocessing not in ("auto", "scale"):
            _fail(where, "model.backbone.preprocessing", f"must be auto or scale for {self.architecture} "
                  "(its ImageNet weights expect x / 127.5 - 1)", self.preprocessing)
        if not 0.0 < self.alpha <= 2.0:
            _fail(where, "model.backbone.alpha", "must be in (0, 2]", self.alpha)
        if self.weights == "imagenet" and self.alpha not in ((1.0,) if self.minimalistic else (0.75, 1.0)):
            _fail(where, "model.backbone.alpha", "must be 0.75 or 1.0 with ImageNet weights (1.0 when "
                  "minimalistic: the widths keras.applications publishes)", self.alpha)
        if self.weights not in (None, "imagenet") and not self.weights.endswith(".h5"):
            _fail(where, "model.backbone.weights", f"must be null, 'imagenet' or an .h5 file of the "
                  f"keras.applications {self.architecture} weights", self.weights)

    @property
    def resolved_preprocessing(self) -> str:
        """The input normalisation the backbone's weights expect."""
        if self.preprocessing != "auto":
            return self.preprocessing
        if self.architecture != "resnet":
            return "scale"
        return "caffe" if self.convention == "keras" else "torch"


@dataclass
class SEBConfig:
    """Semantic Embedding Branch (paper Sec. 3.1, Fig. 4).

    ``gate_init``: ``identity`` starts every gate at exactly 1 (zero kernel, bias one), so the
    untrained branch passes the features through; ``glorot`` is Keras' default conv init.

    ``iterations`` (experimental, not in the paper): 1 is the paper's SEB; N > 1 repeats it N
    times, each time re-embedding the low levels with higher levels refined bottom-up by the
    previous pass's embedded levels (``RecurrentSemanticEmbedding``, exfuse_keras/layers/fusion.py).
    """

    enabled: bool = True
    gate_init: Literal["identity", "glorot"] = "identity"
    iterations: int = 1


@dataclass
class ECREConfig:
    """Explicit Channel Resolution Embedding (paper Sec. 3.2, Fig. 5, Table 4).

    ``enabled`` makes the top upsampling (res5 scores -> res4 resolution) a sub-pixel
    upsampling (depth_to_space); otherwise it is the decoder's usual upsampling.
    ``supervised`` adds the auxiliary output ``"ecre"`` at 1/16 resolution. The four rows of
    Table 4 are the four combinations.
    """

    enabled: bool = True
    supervised: bool = True


@dataclass
class DAPConfig:
    """Densely Adjacent Prediction (paper Sec. 3.2).

    ``placement``, where the C*k^2 votes come from (the paper does not say):

    - ``upsampling_br``: the last upsampling emits C*k^2 channels, DAP averages them, and the
      decoder's final C-channel Boundary Refinement follows, as it does without DAP (the same
      depth as the decoder without DAP);
    - ``upsampling``: the same without that final refinement (DAP's averaging takes its place);
    - ``refinement``: the last Boundary Refinement runs on the C*k^2 votes, then DAP (costly:
      that refinement works at full resolution on k^2 times the channels).

    The default is ``upsampling``: against ``upsampling_br`` it measured -0.2 [-1.3, +0.9] val
    mIoU points (3 seeds, the ablation's cpu preset on scenes, docs/ablation_choices.md) for 30%
    fewer FLOPs there; the ablation's row 6 uses ``upsampling_br`` to match row 5's depth.
    """

    enabled: bool = True
    kernel: int = 3
    placement: Literal["upsampling_br", "upsampling", "refinement"] = "upsampling"


@dataclass
class SSConfig:
    """Semantic Supervision heads at segmentation time (paper Sec. 3.1, Fig. 3).

    Each level in ``levels`` gets a head whose output ``"ss_<level>"`` predicts which classes
    are present in the crop. ``[]`` switches them off.
    """

    levels: list[str] = field(default_factory=list)
    channels: int = 256


@dataclass
class ModelConfig:
    """The network. ``gcn_init_scale``: the variance scale of each Global Convolution block's
    second convolutions (``GlobalConvolution(output_scale=...)``; 1.0 is Keras's Glorot default,
    which the tiny presets were measured with; 0.1 starts a deep random model's logits near a
    uniform guess).

    ``decoder_levels``: the backbone levels the decoder scores and fuses, top-down from the
    highest listed (default all four, the paper's Fig. 2). Fewer levels are the ablation's
    positive controls, not ExFuse: without res2 the model predicts at its lowest level's stride
    and resizes its scores bilinearly to the input (no learned upsampling, so no detail finer
    than that stride); without res4 and res5 no score sees the context those levels carry. ECRE
    (the res5 upsampling) needs res5, DAP (at the input resolution) res2."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder_levels: list[str] = field(default_factory=lambda: list(DECODER_LEVELS))
    gcn_kernel: int = 15
    gcn_init_scale: float = 0.1
    upsampling: Literal["deconv", "bilinear"] = "deconv"
    seb: SEBConfig = field(default_factory=SEBConfig)
    ecre: ECREConfig = field(default_factory=ECREConfig)
    dap: DAPConfig = field(default_factory=DAPConfig)
    ss: SSConfig = field(default_factory=SSConfig)

    def validate(self, where: str) -> None:
        self.backbone.validate(where)
        if self.gcn_kernel < 1 or self.gcn_kernel % 2 == 0:
            _fail(where, "model.gcn_kernel", "must be a positive odd integer", self.gcn_kernel)
        if not self.gcn_init_scale > 0:
            _fail(where, "model.gcn_init_scale", "must be positive", self.gcn_init_scale)
        _positive(where, "model.seb.iterations", self.seb.iterations)
        if self.dap.kernel < 1 or self.dap.kernel % 2 == 0:
            _fail(where, "model.dap.kernel", "must be a positive odd integer (the centre pixel votes for itself)",
                  self.dap.kernel)
        for level in self.ss.levels:
            if level not in SS_LEVELS:
                _fail(where, "model.ss.levels", f"entries must be among {list(SS_LEVELS)}", self.ss.levels)
        if len(set(self.ss.levels)) != len(self.ss.levels):
            _fail(where, "model.ss.levels", "must not repeat a level", self.ss.levels)
        _positive(where, "model.ss.channels", self.ss.channels)
        levels = self.decoder_levels
        if not levels or any(level not in DECODER_LEVELS for level in levels) or len(set(levels)) != len(levels):
            _fail(where, "model.decoder_levels", f"must be distinct entries of {list(DECODER_LEVELS)}, at least one",
                  levels)
        if self.ecre.enabled and "res5" not in levels:
            _fail(where, "model.decoder_levels", "must hold res5 when model.ecre.enabled (ECRE upsamples res5's "
                  "scores)", levels)
        if self.dap.enabled and "res2" not in levels:
            _fail(where, "model.decoder_levels", "must hold res2 when model.dap.enabled (DAP works at the input "
                  "resolution the decoder reaches from res2)", levels)


@dataclass
class FolderConfig:
    """A user's own dataset (``data.dataset: folder``): a folder of images and one of masks.

    Masks are PNGs named like their image (``masks/<id>.png`` for ``images/<id>.jpg``), palette
    or single-channel, holding class indices. The split comes from ``train_list`` and
    ``val_list`` (text files of ids, one per line, like VOC's ImageSets) when given, otherwise
    from a random ``val_fraction`` of the images drawn with ``split_seed``. ``test_list`` (with
    the other two lists) adds a test split, which ``evaluate.py --split test`` scores and
    training never reads. Paths are relative to ``data.root``.
    """

    image_dir: str = "images"
    mask_dir: str = "masks"
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    test_list: Optional[str] = None
    val_fraction: float = 0.1
    split_seed: int = 0

    def validate(self, where: str) -> None:
        if (self.train_list is None) != (self.val_list is None):
            _fail(where, "data.folder.train_list",
                  "and data.folder.val_list must be given together (or neither, to split by val_fraction)",
                  self.train_list)
        if self.test_list is not None and self.train_list is None:
            _fail(where, "data.folder.test_list", "needs data.folder.train_list and val_list too (a random "
                  "split by val_fraction has no test split)", self.test_list)
        if not 0.0 < self.val_fraction < 1.0:
            _fail(where, "data.folder.val_fraction", "must be in (0, 1)", self.val_fraction)


@dataclass
class CocoConfig:
    """COCO 2017 mapped to the 20 VOC classes (``data.dataset: coco_voc``; exfuse_keras/data/coco.py).

    ``source``: ``panoptic`` (TFDS ``coco/2017_panoptic``, downloaded and prepared by TFDS under
    ``data.tfds_dir``) or ``instances`` (the official ``annotations/instances_*2017.json`` and
    ``train2017/``, ``val2017/`` folders or zips under ``data.root``). ``drop_empty`` leaves out
    the images with no pixel of a VOC class.
    """

    source: Literal["panoptic", "instances"] = "panoptic"
    drop_empty: bool = True


@dataclass
class MixComponent:
    """One dataset of a mix (``data.dataset: mix``).

    ``dataset``: any value of ``data.dataset`` but ``mix``; it reads the other ``data`` settings
    (``folder``, ``coco``...) as it would alone. ``root``: its ``data.root`` (default
    ``data.root``). ``weight``: how many times an epoch shows each of its training examples on
    average (1: once, as in a plain concatenation; 2: twice; 0.5: a random half). ``val``: its
    val split is part of the mix's val split.
    """

    dataset: str = ""
    root: Optional[str] = None
    weight: float = 1.0
    val: bool = False


@dataclass
class SyntheticConfig:
    """How a built-in dataset (``shapes``, ``scenes``) is generated under ``data.root`` when its
    meta file is missing or records other arguments; null keeps the generator's default (shapes:
    1,200 + 200 images of 128x128; scenes: 3,000 + 500 of 256x256; seed 0)."""

    size: Optional[int] = None
    num_train: Optional[int] = None
    num_val: Optional[int] = None
    seed: Optional[int] = None
    # scenes only: how large plain discs and squares are drawn, "independent" or "matched"
    # (exfuse_keras/data/scenes.py, LOOK_ALIKE_SIZES).
    look_alike_sizes: Optional[str] = None

    def validate(self, where: str) -> None:
        for key in ("size", "num_train", "num_val"):
            if getattr(self, key) is not None:
                _positive(where, f"data.synthetic.{key}", getattr(self, key))
        if self.look_alike_sizes is not None and self.look_alike_sizes not in ("independent", "matched"):
            _fail(where, "data.synthetic.look_alike_sizes", "must be independent or matched", self.look_alike_sizes)

    def arguments(self) -> dict:
        """The generator's keyword arguments that are set."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


@dataclass
class ImageNetConfig:
    """ImageNet classification input for the backbone's SS pretraining (exfuse_keras/data/imagenet.py).

    ``root``: the TFDS manual folder holding ``ILSVRC2012_img_train.tar`` and
    ``ILSVRC2012_img_val.tar`` (default ``data.root``). Training crops a random box of
    ``crop_area_range`` of the image area (aspect 3/4..4/3), resized to ``image_size``;
    evaluation resizes the short side to ``image_size / eval_crop_fraction`` and takes the
    centre ``image_size`` square.
    """

    root: Optional[str] = None
    image_size: int = 224
    crop_area_range: list[float] = field(default_factory=lambda: [0.08, 1.0])
    eval_crop_fraction: float = 0.875

    def validate(self, where: str) -> None:
        _positive(where, "data.imagenet.image_size", self.image_size)
        if len(self.crop_area_range) != 2 or not 0 < self.crop_area_range[0] <= self.crop_area_range[1] <= 1:
            _fail(where, "data.imagenet.crop_area_range", "must be [min, max] with 0 < min <= max <= 1",
                  self.crop_area_range)
        if not 0 < self.eval_crop_fraction <= 1:
            _fail(where, "data.imagenet.eval_crop_fraction", "must be in (0, 1]", self.eval_crop_fraction)


@dataclass
class DataConfig:
    """The dataset, what the model needs to know about it, and the input pipeline's settings.

    ``num_classes``, ``class_names`` and ``palette`` describe the labels, so a user's own
    dataset needs no code change. ``palette`` defaults to the PASCAL VOC colour map.

    ``dataset``: ``voc`` (VOC 2012 train/val), ``train_aug`` (SBD + VOC train, 10,582 images;
    val = VOC val), ``shapes`` and ``scenes`` (the built-in data and the built-in ablation
    benchmark, generated under ``root`` when missing),
    ``folder`` (``folder`` section), ``coco_voc`` (COCO 2017 in VOC's classes, ``coco``
    section) or ``mix`` (several of these in one training set, ``mix`` list; the paper's
    stage 1 is ``coco_voc`` + ``train_aug``). ``root`` holds the downloads or extracted
    folders; prepared TFDS records go to ``tfds_dir`` (default ``<root>/tfds``).

    Training augmentation (exfuse_keras/data/pipeline.py): a random scale in ``scale_range``,
    padding to ``crop_size`` (the image with ``mean_rgb``, the mask with ``ignore_label``), a
    random crop, a horizontal flip when ``flip`` and colour jitter when ``photometric_jitter``.
    ``crop_size: auto`` (folder datasets) is the train images' median shorter side in multiples of
    32 within 64..512, measured by train.py (exfuse_keras/data/sizing.py).
    ``shuffle_buffer`` examples are shuffled at a time (encoded, about 100 kB each for VOC).

    How mask files are read (exfuse_keras/data/checks.py): ``mask_format: index`` (the default)
    takes a palette or single-channel PNG's values as class indices; ``rgb`` takes each pixel's
    colour and looks it up in the classes' colours (``resolved_palette``; the ignore label's colour
    is VOC's void colour unless ``palette`` gives one), so colour masks drawn with the palette are
    read as meant. ``label_map`` then replaces values, e.g. ``{255: 1}`` for black-and-white
    0/255 masks, which would otherwise be background and ignored pixels only. Both apply to
    folder datasets (``dataset: folder``).
    """

    dataset: str = "voc"
    root: str = "data"
    tfds_dir: Optional[str] = None
    num_classes: int = 21
    class_names: list[str] = field(default_factory=lambda: list(VOC_CLASSES))
    palette: Optional[list[list[int]]] = None
    ignore_label: int = 255
    mask_format: Literal["index", "rgb"] = "index"
    label_map: dict[int, int] = field(default_factory=dict)
    crop_size: Union[int, Literal["auto"]] = 512
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    photometric_jitter: bool = False
    mean_rgb: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    shuffle_buffer: int = 1000
    folder: FolderConfig = field(default_factory=FolderConfig)
    coco: CocoConfig = field(default_factory=CocoConfig)
    mix: list[MixComponent] = field(default_factory=list)
    imagenet: ImageNetConfig = field(default_factory=ImageNetConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    @property
    def resolved_palette(self) -> list[list[int]]:
        """The classes' colours, ``num_classes`` [r, g, b] triples: ``palette``'s first ones, else
        the PASCAL VOC colour map's. Labels beyond them (the ignore label) are coloured by
        ``data.palette.colorize``, which falls back to VOC's colours (255: VOC's void colour)."""
        if self.palette is not None:
            return [[int(v) for v in colour] for colour in self.palette[:self.num_classes]]
        from exfuse_keras.data.palette import voc_palette

        return voc_palette(self.num_classes).tolist()

    def validate(self, where: str) -> None:
        if self.num_classes < 2:
            _fail(where, "data.num_classes", "must be at least 2", self.num_classes)
        if self.num_classes > 255:
            _fail(where, "data.num_classes", "must be at most 255 (label 255 is the ignore label)",
                  self.num_classes)
        if len(self.class_names) != self.num_classes:
            _fail(where, "data.class_names",
                  f"must have data.num_classes = {self.num_classes} entries, got {len(self.class_names)}",
                  self.class_names)
        if self.palette is not None:
            if len(self.palette) < self.num_classes or any(
                    len(c) != 3 or any(not 0 <= v <= 255 for v in c) for c in self.palette):
                _fail(where, "data.palette",
                      f"must be at least {self.num_classes} [r, g, b] triples of 0..255", self.palette)
        if not 0 <= self.ignore_label <= 255 or self.ignore_label < self.num_classes:
            _fail(where, "data.ignore_label", "must be in [num_classes, 255]", self.ignore_label)
        if (self.label_map or self.mask_format != "index") and self.dataset != "folder":
            _fail(where, "data.label_map" if self.label_map else "data.mask_format",
                  "applies to a folder dataset (data.dataset: folder) only; the other datasets' masks have "
                  "one format", self.label_map or self.mask_format)
        if self.mask_format == "rgb":
            from exfuse_keras.data.checks import mask_reading

            try:
                mask_reading(self)
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from None
        for value, label in self.label_map.items():
            if not 0 <= value <= 255:
                _fail(where, f"data.label_map[{value}]", "maps a mask value, which must be in 0..255", value)
            if not (0 <= label < self.num_classes or label == self.ignore_label):
                _fail(where, f"data.label_map[{value}]",
                      f"must map to a class in 0..{self.num_classes - 1} or the ignore label {self.ignore_label}",
                      label)
        if self.crop_size != "auto" and (self.crop_size <= 0 or self.crop_size % OUTPUT_STRIDE):
            _fail(where, "data.crop_size", f"must be a positive multiple of {OUTPUT_STRIDE} (the output stride)",
                  self.crop_size)
        if self.dataset not in DATASETS:
            _fail(where, "data.dataset", f"must be one of {list(DATASETS)}", self.dataset)
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            _fail(where, "data.scale_range", "must be [min, max] with 0 < min <= max", self.scale_range)
        if len(self.mean_rgb) != 3 or any(not 0 <= v <= 255 for v in self.mean_rgb):
            _fail(where, "data.mean_rgb", "must be three values in 0..255 (R, G, B)", self.mean_rgb)
        _positive(where, "data.shuffle_buffer", self.shuffle_buffer)
        self.folder.validate(where)
        self.imagenet.validate(where)
        self.synthetic.validate(where)
        if self.synthetic.look_alike_sizes is not None and self.dataset != "scenes":
            _fail(where, "data.synthetic.look_alike_sizes", "is an option of the scenes benchmark only",
                  self.synthetic.look_alike_sizes)
        self._validate_mix(where)

    def mix_entry(self, component: MixComponent) -> "DataConfig":
        """This section as one entry of ``mix`` reads it: the entry's dataset and root, no mix."""
        return dataclasses.replace(self, dataset=component.dataset, root=component.root or self.root, mix=[])

    def _validate_mix(self, where: str) -> None:
        if self.dataset != "mix":
            if self.mix:
                _fail(where, "data.mix", "is read only when data.dataset is 'mix'; remove it or set "
                      "data.dataset: mix", [c.dataset for c in self.mix])
            return
        if not self.mix:
            _fail(where, "data.mix", "must list the datasets to mix when data.dataset is 'mix', e.g. "
                  "[{dataset: coco_voc}, {dataset: train_aug, val: true}]", self.mix)
        for i, component in enumerate(self.mix):
            if component.dataset not in DATASETS or component.dataset == "mix":
                _fail(where, f"data.mix[{i}].dataset", f"must be one of {[d for d in DATASETS if d != 'mix']}",
                      component.dataset)
            _positive(where, f"data.mix[{i}].weight", component.weight)
        if not any(component.val for component in self.mix):
            _fail(where, "data.mix", "needs at least one entry with 'val: true' (whose val split is "
                  "evaluated)", [c.dataset for c in self.mix])


@dataclass
class InitConfig:
    """Where a training stage starts from (the paper's stages 2 and 3 start from the previous one).

    ``from_run``: a run directory or ``.keras`` file; ``part``: ``backbone`` (its layers only)
    or ``model`` (every layer whose name and shapes match).
    """

    from_run: Optional[str] = None
    part: Literal["backbone", "model"] = "model"


@dataclass
class TrainConfig:
    """Optimisation and run settings.

    ``batch_size`` is the global batch (split across replicas). ``learning_rate`` is for
    ``reference_batch_size`` images and is scaled linearly to ``batch_size``. An epoch is
    ``steps_per_epoch`` steps: the unit of backup (exact resume), validation and logging;
    ``auto`` is one pass over the train split, measured by train.py (exfuse_keras/data/sizing.py).
    ``mixed_precision`` and ``jit_compile`` default to on for GPUs and off for CPUs (``auto``);
    ``deterministic`` turns on TensorFlow's op determinism for bit-reproducible runs.
    ``val_batch_size`` is per replica (validation during training).
    ``ecre_target`` is how ECRE's auxiliary loss reads the labels at 1/16 (``nearest`` labels,
    ``soft`` class shares per cell, or the logits ``upsampled`` to the labels; ``ECRECrossEntropy``).
    ``log_every_steps``: every so many steps, the mean of each training loss over the steps since
    the last such point goes to ``steps.csv`` and TensorBoard (``logs/steps``), so a loss spike
    inside a long epoch shows where it happened (null: per epoch only).
    ``max_train_seconds`` is a wall-clock budget (null: none); ``budget_mode`` says what it does:
    ``stop`` ends the run where the time runs out, ``anneal`` also drives the learning-rate
    schedule by time (it follows whichever of steps and time is further along), so a slower
    machine still finishes the decay within the budget, with fewer steps.
    """

    batch_size: int = 16
    epochs: int = 50
    steps_per_epoch: Union[int, Literal["auto"]] = 1000
    optimizer: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = 0.01
    reference_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 1000
    poly_power: float = 0.9
    ecre_loss_weight: float = 1.0
    ecre_target: Literal["nearest", "soft", "upsampled"] = "nearest"
    ss_loss_weight: float = 0.2
    class_weights: Optional[list[float]] = None
    ohem_fraction: Optional[float] = None
    mixed_precision: Literal["auto", "off", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: Literal["auto", "on", "off"] = "auto"
    deterministic: bool = False
    seed: int = 0
    val_batch_size: int = 1
    log_every_steps: Optional[int] = 100
    max_train_seconds: Optional[float] = None
    budget_mode: Literal["stop", "anneal"] = "stop"
    init: InitConfig = field(default_factory=InitConfig)

    def validate(self, where: str) -> None:
        for key in ("batch_size", "epochs", "steps_per_epoch", "reference_batch_size", "val_batch_size"):
            if getattr(self, key) != "auto":
                _positive(where, f"train.{key}", getattr(self, key))
        if self.learning_rate <= 0:
            _fail(where, "train.learning_rate", "must be positive", self.learning_rate)
        if not 0 <= self.momentum < 1:
            _fail(where, "train.momentum", "must be in [0, 1)", self.momentum)
        for key in ("weight_decay", "warmup_steps", "ecre_loss_weight", "ss_loss_weight"):
            if getattr(self, key) < 0:
                _fail(where, f"train.{key}", "must be >= 0", getattr(self, key))
        if self.ohem_fraction is not None and not 0 < self.ohem_fraction <= 1:
            _fail(where, "train.ohem_fraction", "must be in (0, 1] or null", self.ohem_fraction)
        if self.class_weights is not None and any(w < 0 for w in self.class_weights):
            _fail(where, "train.class_weights", "must be non-negative", self.class_weights)
        if self.log_every_steps is not None:
            _positive(where, "train.log_every_steps", self.log_every_steps)
        if self.max_train_seconds is not None and self.max_train_seconds <= 0:
            _fail(where, "train.max_train_seconds", "must be positive or null", self.max_train_seconds)


@dataclass
class EvalConfig:
    """Test-time protocol: single scale (ablations) or multi-scale + flip (final numbers).

    ``sliding_window``: ``[crop, stride]`` to predict images in overlapping crop x crop windows
    (exfuse_keras/inference/sliding.py), or null for the whole image at once.
    """

    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    sliding_window: Optional[list[int]] = None

    def validate(self, where: str) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            _fail(where, "eval.scales", "must be a non-empty list of positive scales", self.scales)
        window = self.sliding_window
        if window is not None and (len(window) != 2 or not 0 < window[1] <= window[0]):
            _fail(where, "eval.sliding_window", "must be [crop, stride] with 0 < stride <= crop, or null", window)


@dataclass
class ExportConfig:
    max_side: int = 2048
    tflite_size: list[int] = field(default_factory=lambda: [512, 512])

    def validate(self, where: str) -> None:
        _positive(where, "export.max_side", self.max_side)
        if len(self.tflite_size) != 2 or any(s <= 0 or s % OUTPUT_STRIDE for s in self.tflite_size):
            _fail(where, "export.tflite_size", f"must be [height, width], positive multiples of {OUTPUT_STRIDE}",
                  self.tflite_size)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self, where: str = "config") -> "Config":
        for section in (self.model, self.data, self.train, self.eval, self.export):
            section.validate(where)
        weights = self.train.class_weights
        if weights is not None and len(weights) != self.data.num_classes:
            _fail(where, "train.class_weights", f"must have data.num_classes = {self.data.num_classes} entries",
                  weights)
        return self


def _fail(where: str, key: str, expected: str, value) -> typing.NoReturn:
    raise ConfigError(f"{where}: {key} {expected}, got {value!r}")


def _positive(where: str, key: str, value) -> None:
    if value <= 0:
        _fail(where, key, "must be positive", value)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        names = " or ".join(_type_name(a) for a in args)
        return names + " or null" if type(None) in typing.get_args(tp) else names
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        return f"a mapping of {_type_name(key_type)} to {_type_name(value_type)}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(value, tp, key: str, where: str):
    """Checks ``value`` against the annotation ``tp`` and converts mappings to dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            _fail(where, key, f"must be {_type_name(tp)}", value)
        return _build(tp, value, key, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        for alternative in inner[:-1]:  # e.g. an integer or "auto": the first that takes the value
            try:
                return _convert(value, alternative, key, where)
            except ConfigError:
                pass
        if len(inner) > 1:
            try:
                return _convert(value, inner[-1], key, where)
            except ConfigError:
                _fail(where, key, f"must be {_type_name(tp)}", value)
        return _convert(value, inner[0], key, where)
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in typing.get_args(tp):
            return "on" if value else "off"  # YAML 1.1 reads a bare on/off as true/false
        if value not in typing.get_args(tp):
            _fail(where, key, f"must be {_type_name(tp)}", value)
        return value
    if origin is dict:
        if not isinstance(value, dict):
            _fail(where, key, f"must be {_type_name(tp)}", value)
        key_type, value_type = typing.get_args(tp)
        return {_convert(k, key_type, f"{key} key", where): _convert(v, value_type, f"{key}[{k}]", where)
                for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            _fail(where, key, f"must be {_type_name(tp)}", value)
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            _fail(where, key, "must be true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, key, "must be an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, key, "must be a number", value)
        if not math.isfinite(value):  # NaN passes every range check below (all comparisons are False)
            _fail(where, key, "must be a finite number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(where, key, "must be a string", value)
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _build(cls, values: dict, prefix: str, where: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else \
                f"; expected one of {names}"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        kwargs[name] = _convert(value, hints[name], key, where)
    return cls(**kwargs)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _set_dotted(tree: dict, dotted: str, value, where: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: cannot set '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(values: dict, where: str = "config") -> Config:
    """Builds and validates a ``Config`` from nested dicts (e.g. parsed YAML)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections, got {type(values).__name__}")
    return _build(Config, values, "", where).validate(where)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a key given twice in one mapping (YAML itself keeps the last
    one silently, so a second ``train:`` section would drop the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"{self.name}: key {key!r} is given twice (line {key_node.start_mark.line + 1}); "
                                  f"expected each key once per section")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        try:
            values = yaml.load(f, Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return values


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml_with_bases(path: str, chain: tuple) -> dict:
    if os.path.abspath(path) in chain:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    values = _read_yaml(path)
    bases = values.pop("base", None)
    if bases is None:
        return values
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: base must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: base {base!r} not found (expected the file {base_path})")
        merged = _merge(merged, _read_yaml_with_bases(base_path, chain + (os.path.abspath(path),)))
    return _merge(merged, values)


def load_config_stack(paths: typing.Sequence[str], overrides: typing.Sequence[str] = ()) -> Config:
    """Reads several YAML configs, each merged over the ones before it (each with its own
    ``base`` chain), then applies ``overrides`` and validates, as ``load_config``.

    Example: an ablation row on another dataset,
    ``load_config_stack(["configs/ablation/row5_seb.yaml", "configs/data/scenes.yaml"])``.
    """
    if not paths:
        return load_config(None, overrides)
    values: dict = {}
    for path in paths:
        values = _merge(values, _read_yaml_with_bases(os.fspath(path), ()))
    return _apply_overrides(values, overrides, " + ".join(os.fspath(p) for p in paths))


def load_config(path: Optional[str] = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Reads a YAML config, applies ``key.sub=value`` overrides and validates the result.

    Args:
        path (str | os.PathLike | None): YAML file, or ``None`` for the defaults. It lists
            only what it changes and may start from another file with ``base: other.yaml``.
        overrides (Sequence[str]): dotted assignments such as ``"train.batch_size=16"``;
            values are parsed as YAML (``[1, 2]``, ``true``, ``null``).

    Returns:
        Config: the validated config.

    Raises:
        ConfigError: one line naming the file (or ``--set``) and the offending key.

    Example::

        from exfuse_keras import load_config

        cfg = load_config("configs/quickstart.yaml", ["train.batch_size=16", "model.seb.enabled=false"])
        cfg.data.num_classes                   # 6
    """
    values: dict = {}
    where = "config"
    if path is not None:
        where = os.fspath(path)
        values = _read_yaml_with_bases(where, ())
    return _apply_overrides(values, overrides, where)


def _apply_overrides(values: dict, overrides: typing.Sequence[str], where: str) -> Config:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.batch_size=16")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_dotted(values, key.strip(), value, f"--set {key.strip()}")
    try:
        return config_from_dict(values, where)
    except ConfigError as err:
        # An override's problem is reported against the override rather than the file.
        message = str(err)
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            parts = key.split(".")
            prefixes = [".".join(parts[:n]) for n in range(len(parts), 1, -1)]  # train.epochs.x: train.epochs too
            if f"'{key}'" in message or any(f" {prefix} " in message for prefix in prefixes):
                raise ConfigError(message.replace(f"{where}: ", f"{where} with --set {item}: ", 1)) from None
        raise


def save_config(cfg: Config, path: str) -> None:
    """Writes the resolved config as YAML; ``load_config`` reads it back to an equal config.

    Args:
        cfg (Config): the config to write (every key, defaults included).
        path (str): the YAML file to write.

    Example::

        save_config(cfg, "runs/my_run/config.yaml")
        assert load_config("runs/my_run/config.yaml") == cfg
    """
    from exfuse_keras.atomic import atomic_write

    atomic_write(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None))
