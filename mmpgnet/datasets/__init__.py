"""Datasets: the synthetic COCO-format person generator."""
from .coco_validation import CocoFormatError, validate_coco_file
from .synthetic_coco import (COCO_KEYPOINT_NAMES, COCO_SKELETON, SyntheticCocoConfig,
                             generate_split, generate_synthetic_coco, render_image)

__all__ = [
    'COCO_KEYPOINT_NAMES', 'COCO_SKELETON', 'SyntheticCocoConfig', 'generate_split',
    'generate_synthetic_coco', 'render_image', 'CocoFormatError', 'validate_coco_file'
]
