"""Mask R-CNN person/garment segmenter (torchvision), weights from a file or torchvision's download."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from retrieval.segmentation.base import Segmenter, SegmenterError

log = logging.getLogger(__name__)


class MaskRCNNSegmenter(Segmenter):
    """torchvision's Mask R-CNN (maskrcnn_resnet50_fpn): the union of its instance masks above `score`.

    weights: a path to a state_dict (torch.save(model.state_dict(), path)), or "DEFAULT" for torchvision's COCO
    weights (downloaded once to $TORCH_HOME, needs internet). Random weights only with allow_random=True (tests
    and cost measurements): without weights and without that flag this refuses to start.
    labels: COCO category ids to keep (None: any detection); min_size/max_size: the detector's input resize.
    """

    name = "maskrcnn"

    def __init__(self, weights: str | Path | None = None, *, allow_random: bool = False, device: str = "cpu",
                 score: float = 0.5, labels: Iterable[int] | None = None, min_size: int = 512, max_size: int = 853,
                 detections: int = 10, candidate_score: float = 0.05, batch_size: int = 4,
                 threads: int | None = None, **common: Any):
        super().__init__(**common)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device, self.score, self.batch_size = device, score, max(1, batch_size)
        self.labels = tuple(labels) if labels is not None else None
        detector = {"min_size": min_size, "max_size": max_size, "box_detections_per_img": detections,
                    "box_score_thresh": candidate_score}
        self.model = build_maskrcnn(weights, allow_random, detector).to(device).eval()

    def masks(self, images, payloads, scales) -> list[np.ndarray | None]:
        import torch
        from torchvision.transforms.functional import pil_to_tensor

        tensors = [pil_to_tensor(image).float().div_(255) for image in images]
        out: list[np.ndarray | None] = []
        with torch.inference_mode():
            for start in range(0, len(tensors), self.batch_size):
                chunk = [t.to(self.device) for t in tensors[start:start + self.batch_size]]
                out.extend(self._alpha(detection) for detection in self.model(chunk))
        return out

    def _alpha(self, detection: dict) -> np.ndarray | None:
        """Pixelwise max of the kept instances' soft masks, or None when nothing passes."""
        keep = detection["scores"] >= self.score
        if self.labels is not None:
            keep &= _isin(detection["labels"], self.labels)
        if not bool(keep.any()):
            return None
        return detection["masks"][keep, 0].amax(dim=0).float().cpu().numpy()


def _isin(values, allowed: tuple[int, ...]):
    import torch

    return torch.isin(values, torch.tensor(allowed, device=values.device))


def build_maskrcnn(weights: str | Path | None, allow_random: bool, detector: dict):
    """The detector with real weights, or random ones only when explicitly allowed."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn

    if weights is None:
        if not allow_random:
            raise SegmenterError("maskrcnn needs weights: weights=PATH (a saved state_dict) or weights='DEFAULT' "
                                 "(torchvision's COCO weights, downloaded with internet); random weights only "
                                 "with allow_random=True, for tests")
        log.warning("maskrcnn: RANDOM weights (allow_random=True): masks are meaningless, use for plumbing only")
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **detector)
    if str(weights).upper() in ("DEFAULT", "COCO_V1"):
        return _download_maskrcnn(MaskRCNN_ResNet50_FPN_Weights.COCO_V1, detector)
    return _maskrcnn_from_file(Path(weights), detector)


def _download_maskrcnn(weights, detector: dict):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    try:
        return maskrcnn_resnet50_fpn(weights=weights, **detector)
    except Exception as err:  # no internet and no cache: say how to provide the file
        raise SegmenterError(f"could not get torchvision's Mask R-CNN weights ({err}); download {weights.url} "
                             "elsewhere and pass weights=PATH") from err


def _maskrcnn_from_file(path: Path, detector: dict):
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    if not path.is_file():
        raise SegmenterError(f"maskrcnn weights {path} not found")
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **detector)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError) as err:
        raise SegmenterError(f"{path} is not a maskrcnn_resnet50_fpn state_dict: {err}") from err
    return model
