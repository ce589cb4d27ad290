"""Draw a checkpoint's predicted skeletons on val images of a COCO key-point dataset.

The ground-truth person boxes of each image are the top-down model's input boxes; the drawing is
done by ``tools/inference.py`` (MMPose's visualizer), which also writes the key points as JSON.

Example::

    python tools/analysis/visualize_val_predictions.py CONFIG CKPT data/synthetic_coco --num 8
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/

from inference import main as run_inference  # noqa: E402


def main(argv=None) -> List[str]:
    parser = argparse.ArgumentParser(description='Predicted skeletons on val images')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('data_root')
    parser.add_argument('--split', default='val')
    parser.add_argument('--num', type=int, default=8, help='number of images')
    parser.add_argument('--out-dir', default='outputs/val_predictions')
    args = parser.parse_args(argv)

    ann_file = osp.join(args.data_root, 'annotations', f'person_keypoints_{args.split}.json')
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file {ann_file} does not exist')
    with open(ann_file) as f:
        coco = json.load(f)
    images = coco['images'][:args.num]
    boxes = {im['file_name']: [] for im in images}
    names = {im['id']: im['file_name'] for im in images}
    for ann in coco['annotations']:
        if ann['image_id'] in names:
            x, y, w, h = ann['bbox']
            boxes[names[ann['image_id']]].append([x, y, x + w, y + h])
    os.makedirs(args.out_dir, exist_ok=True)
    bbox_file = osp.join(args.out_dir, 'boxes.json')
    with open(bbox_file, 'w') as f:
        json.dump(boxes, f)
    paths = [osp.join(args.data_root, args.split, im['file_name']) for im in images]
    return run_inference([args.config, args.checkpoint, *paths, '--bbox-file', bbox_file,
                          '--out-dir', args.out_dir])


if __name__ == '__main__':
    main()
