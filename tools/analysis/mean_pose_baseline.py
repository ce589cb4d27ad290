"""How hard is a key-point dataset? The AP of predicting the mean pose inside each GT box.

The mean pose is learned from the training split: every visible key point is normalised to its
person's box (``(x - x0) / w``, ``(y - y0) / h``) and averaged per key point. On the val split
each ground-truth box gets that mean pose, scaled into the box, with score 1, and COCO's OKS
key-point AP is computed (pycocotools). A model that only learned where key points usually sit in
a box reaches this AP; anything above it comes from reading the image.

Example::

    python tools/analysis/mean_pose_baseline.py data/synthetic_coco
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import analysis_utils  # noqa: E402


def mean_normalised_pose(ann_file: str) -> np.ndarray:
    """Average box-normalised position of each key point over the visible ones.

    Args:
        ann_file (str): COCO key-point annotation file.

    Returns:
        np.ndarray: shape (K, 2) in box units.
    """
    with open(ann_file) as f:
        anns = json.load(f)['annotations']
    kpts = np.array([a['keypoints'] for a in anns], dtype=np.float64).reshape(len(anns), -1, 3)
    boxes = np.array([a['bbox'] for a in anns], dtype=np.float64)
    norm = (kpts[..., :2] - boxes[:, None, :2]) / np.maximum(boxes[:, None, 2:], 1e-6)
    vis = kpts[..., 2:] > 0
    return (norm * vis).sum(0) / np.maximum(vis.sum(0), 1)


def mean_pose_ap(data_root: str, train_split: str = 'train', val_split: str = 'val') -> Dict:
    """COCO key-point AP of the mean-pose baseline.

    Args:
        data_root (str): dataset root with ``annotations/person_keypoints_<split>.json``.
        train_split (str): split the mean pose is learned on.
        val_split (str): split it is evaluated on.

    Returns:
        dict: ``AP``, ``AP50``, ``AP75`` and ``AR``.
    """
    ann = lambda s: osp.join(data_root, 'annotations', f'person_keypoints_{s}.json')  # noqa
    mean = mean_normalised_pose(ann(train_split))
    with open(ann(val_split)) as f:
        people = json.load(f)['annotations']
    results = []
    for a in people:
        if a.get('num_keypoints', 0) == 0:
            continue
        x, y, w, h = a['bbox']
        pts = mean * [w, h] + [x, y]
        kpts = np.concatenate([pts, np.ones((len(pts), 1))], axis=1).reshape(-1)
        results.append(dict(image_id=a['image_id'], category_id=1, keypoints=kpts.tolist(),
                            score=1.0))
    return analysis_utils.coco_keypoint_ap(ann(val_split), results)


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description='Mean-pose baseline AP of a key-point dataset')
    parser.add_argument('data_root')
    args = parser.parse_args(argv)
    stats = mean_pose_ap(args.data_root)
    print('mean-pose baseline: ' + ', '.join(f'{k}={v:.3f}' for k, v in stats.items()))
    return stats


if __name__ == '__main__':
    main()
