"""Garment isolation before encoding: pluggable segmenters (none, u2netp, annotations, maskrcnn) and pipeline stages.

base: results, geometry, the Segmenter class; u2netp / annotations / maskrcnn: the segmenters; factory: build one by
name; stages: the Ray Data stages and query-side isolation. Import from here.
"""

from retrieval.segmentation.annotations import GARMENT_LABELS, PARSING_CLASSES, AnnotationSegmenter, box_mask
from retrieval.segmentation.base import (SEGMENTER_NAMES, Box, NoSegmenter, Segmenter, SegmenterError, SegmentResult,
                                         box_iou, expand_box, full_image, left_whole, mask_box, pad_square,
                                         plain_background)
from retrieval.segmentation.factory import make_segmenter, segmenter_options
from retrieval.segmentation.maskrcnn import MaskRCNNSegmenter, build_maskrcnn
from retrieval.segmentation.stages import (DecodeRGB, PreprocessRGB, SegmentImages, decode_for_segmentation,
                                           png_bytes, rgb_from_bytes, rgb_to_bytes, segment_query)
from retrieval.segmentation.u2netp import (U2NET_SIZE, U2NETP_PATH, U2NETP_SHA256, U2NETP_URL, U2NetP, sha256_of,
                                           u2net_alpha, u2net_input, with_dynamic_batch)

__all__ = [
    "GARMENT_LABELS", "PARSING_CLASSES", "AnnotationSegmenter", "box_mask",
    "SEGMENTER_NAMES", "Box", "NoSegmenter", "Segmenter", "SegmenterError", "SegmentResult", "box_iou", "expand_box",
    "full_image", "left_whole", "mask_box", "pad_square", "plain_background",
    "make_segmenter", "segmenter_options", "MaskRCNNSegmenter", "build_maskrcnn",
    "DecodeRGB", "PreprocessRGB", "SegmentImages", "decode_for_segmentation", "png_bytes", "rgb_from_bytes",
    "rgb_to_bytes", "segment_query",
    "U2NET_SIZE", "U2NETP_PATH", "U2NETP_SHA256", "U2NETP_URL", "U2NetP", "sha256_of", "u2net_alpha", "u2net_input",
    "with_dynamic_batch",
]
