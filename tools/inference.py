"""Top-down key-point inference: a checkpoint + images (+ optional person boxes) -> JSON + overlay.

Examples::

    # whole image as the person box
    python tools/inference.py CONFIG CHECKPOINT demo.jpg --out-dir outputs/inference
    # given boxes (x1 y1 x2 y2), repeated for several people
    python tools/inference.py CONFIG CHECKPOINT demo.jpg --bbox 10 20 110 230 --bbox 150 5 260 235
    # a folder of images, boxes from a JSON file {"image.jpg": [[x1, y1, x2, y2], ...], ...}
    python tools/inference.py CONFIG CHECKPOINT images/ --bbox-file boxes.json

For each image it writes ``<name>.json`` (per person: bbox, 17 key points [x, y] and their
scores, with the key-point names) and ``<name>.png`` (the skeletons drawn by MMPose's visualizer).
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

# an installed mmpgnet first, else this checkout's
sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # noqa: E402

import numpy as np  # noqa: E402

import mmpgnet  # noqa: E402,F401

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        argparse.Namespace: the arguments.
    """
    parser = argparse.ArgumentParser(description='Top-down key-point inference')
    parser.add_argument('config', help='pose config')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('images', nargs='+', help='image files or folders of images')
    parser.add_argument('--bbox', nargs=4, type=float, action='append',
                        metavar=('X1', 'Y1', 'X2', 'Y2'),
                        help='a person box (repeatable); applies to every image')
    parser.add_argument('--bbox-file', help='JSON {image file name: [[x1, y1, x2, y2], ...]}')
    parser.add_argument('--out-dir', default='outputs/inference', help='output folder')
    parser.add_argument('--kpt-thr', type=float, default=0.3, help='draw key points above this')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
    return parser.parse_args(argv)


def collect_images(paths: List[str]) -> List[str]:
    """Expand files and folders into a sorted list of image files.

    Args:
        paths (list[str]): image files or folders.

    Returns:
        list[str]: image files.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: if no image is found.
    """
    images = []
    for path in paths:
        if osp.isdir(path):
            images += sorted(osp.join(path, f) for f in os.listdir(path)
                             if f.lower().endswith(IMAGE_EXTS))
        elif osp.isfile(path):
            images.append(path)
        else:
            raise FileNotFoundError(f'image {path} does not exist')
    if not images:
        raise ValueError(f'no image found in {paths} (looked for {", ".join(IMAGE_EXTS)})')
    return images


def boxes_for(image: str, shape, args: argparse.Namespace,
              bbox_map: Optional[Dict[str, list]]) -> np.ndarray:
    """The person boxes of an image: from --bbox-file, --bbox, or the whole image.

    Args:
        image (str): image path.
        shape (tuple): image ``(height, width, ...)``.
        args (argparse.Namespace): the arguments.
        bbox_map (dict, optional): boxes per image file name.

    Returns:
        np.ndarray: boxes of shape (n, 4) as ``x1, y1, x2, y2``.
    """
    if bbox_map is not None:
        name = osp.basename(image)
        if name not in bbox_map:
            raise KeyError(f'--bbox-file has no boxes for image {name}')
        boxes = np.asarray(bbox_map[name], dtype=np.float32).reshape(-1, 4)
    elif args.bbox:
        boxes = np.asarray(args.bbox, dtype=np.float32)
    else:
        boxes = np.array([[0, 0, shape[1], shape[0]]], dtype=np.float32)
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        raise ValueError(f'box {boxes[bad][0].tolist()} of {image} is empty: need x2 > x1 and '
                         f'y2 > y1')
    return boxes


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    import mmcv
    from mmpose.apis import inference_topdown, init_model
    from mmpose.registry import VISUALIZERS
    from mmpose.structures import merge_data_samples

    images = collect_images(args.images)
    for path in (args.config, args.checkpoint):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path} does not exist')
    bbox_map = None
    if args.bbox_file:
        with open(args.bbox_file) as f:
            bbox_map = json.load(f)
    model = init_model(args.config, args.checkpoint, device=args.device)
    visualizer = VISUALIZERS.build(dict(model.cfg.visualizer, name='mmpgnet_inference'))
    visualizer.set_dataset_meta(model.dataset_meta)
    names = model.dataset_meta.get('keypoint_id2name', {})
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for image in images:
        img = mmcv.imread(image)
        if img is None:
            raise ValueError(f'image {image} could not be decoded')
        boxes = boxes_for(image, img.shape, args, bbox_map)
        result = merge_data_samples(inference_topdown(model, img, boxes, bbox_format='xyxy'))
        inst = result.pred_instances
        people = [
            dict(bbox=[float(v) for v in inst.bboxes[i]],
                 keypoints=inst.keypoints[i].round(2).tolist(),
                 keypoint_scores=inst.keypoint_scores[i].round(4).tolist())
            for i in range(len(inst.keypoints))
        ]
        stem = osp.splitext(osp.basename(image))[0]
        json_file = osp.join(args.out_dir, f'{stem}.json')
        with open(json_file, 'w') as f:
            json.dump(dict(image=image, keypoint_names=[names[i] for i in sorted(names)],
                           people=people), f, indent=1)
        png_file = osp.join(args.out_dir, f'{stem}.png')
        visualizer.add_datasample(stem, mmcv.bgr2rgb(img), result, draw_gt=False,
                                  draw_bbox=True, kpt_thr=args.kpt_thr, show=False,
                                  out_file=png_file)
        written += [json_file, png_file]
        print(f'{image}: {len(people)} people -> {json_file}, {png_file}')
    return written


if __name__ == '__main__':
    from mmpgnet.datasets import CocoFormatError
    try:  # every error main() raises itself is about the input: print it without a traceback
        main()
    except (FileNotFoundError, ValueError, KeyError, CocoFormatError) as error:  # bad input
        sys.exit(f'error: {error}')
