"""Check a COCO annotation file before a loader reads it, with errors that name file and field.

MMPose's and MMDetection's ``CocoDataset`` fail on a malformed file with a ``KeyError`` from deep
inside pycocotools or the parser; :func:`validate_coco_file` reports the file, the record and the
field instead.
"""
import json
import os.path as osp
from typing import Any, Dict, List, Optional

IMAGE_FIELDS = ('id', 'file_name', 'width', 'height')
ANNOTATION_FIELDS = ('id', 'image_id', 'category_id', 'bbox')
KEYPOINT_FIELDS = ('keypoints', 'num_keypoints')


class CocoFormatError(ValueError):
    """A COCO annotation file is malformed; the message names the file, record and field."""


def _require(record: Dict[str, Any], fields, where: str, path: str) -> None:
    for field in fields:
        if field not in record:
            raise CocoFormatError(f'{path}: {where} has no field "{field}"')


def validate_coco_file(path: str, keypoints: bool = True, img_dir: Optional[str] = None,
                       num_keypoints: Optional[int] = None) -> Dict[str, int]:
    """Validate a COCO detection / key-point annotation file.

    Args:
        path (str): the JSON file.
        keypoints (bool): require the key-point fields of every annotation and category.
        img_dir (str, optional): if given, every image's ``file_name`` must exist in it.
        num_keypoints (int, optional): expected key points per annotation (taken from the
            category's ``keypoints`` list when None).

    Returns:
        dict: ``{'images': n, 'annotations': m}``.

    Raises:
        FileNotFoundError: if the file, or an image when ``img_dir`` is given, is missing.
        CocoFormatError: if a section, record or field is missing or malformed.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file {path} does not exist')
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CocoFormatError(f'{path}: not valid JSON ({e})') from None
    if not isinstance(data, dict):
        raise CocoFormatError(f'{path}: the top level must be an object with "images", '
                              f'"annotations" and "categories"')
    _require(data, ('images', 'annotations', 'categories'), 'the top level', path)
    images: List[dict] = data['images']
    if not images:
        raise CocoFormatError(f'{path}: "images" is empty')
    for i, image in enumerate(images):
        _require(image, IMAGE_FIELDS, f'images[{i}]', path)
        if img_dir is not None and not osp.isfile(osp.join(img_dir, image['file_name'])):
            raise FileNotFoundError(f'{path}: images[{i}] refers to {image["file_name"]}, which '
                                    f'is not in {img_dir}')
    if keypoints:
        for i, cat in enumerate(data['categories']):
            _require(cat, ('id', 'name', 'keypoints'), f'categories[{i}]', path)
        if num_keypoints is None and data['categories']:
            num_keypoints = len(data['categories'][0]['keypoints'])
    image_ids = {image['id'] for image in images}
    for i, ann in enumerate(data['annotations']):
        where = f'annotations[{i}] (id={ann.get("id", "?")})'
        _require(ann, ANNOTATION_FIELDS + (KEYPOINT_FIELDS if keypoints else ()), where, path)
        if ann['image_id'] not in image_ids:
            raise CocoFormatError(f'{path}: {where} refers to image_id {ann["image_id"]}, which '
                                  f'is not in "images"')
        if len(ann['bbox']) != 4:
            raise CocoFormatError(f'{path}: {where} field "bbox" must have 4 numbers '
                                  f'[x, y, w, h], got {len(ann["bbox"])}')
        if keypoints and num_keypoints and len(ann['keypoints']) != 3 * num_keypoints:
            raise CocoFormatError(
                f'{path}: {where} field "keypoints" must have {3 * num_keypoints} numbers '
                f'({num_keypoints} x [x, y, v]), got {len(ann["keypoints"])}')
    return dict(images=len(images), annotations=len(data['annotations']))
