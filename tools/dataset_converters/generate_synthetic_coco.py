"""Generate a synthetic COCO-format person key-point dataset (train and val splits).

Example::

    python tools/dataset_converters/generate_synthetic_coco.py data/synthetic_coco \\
        --num-train 1000 --num-val 200 --seed 0 --img-size 320 240
"""
import argparse
import os.path as osp
import sys

sys.path.append(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # noqa: E402

from mmpgnet.datasets import SyntheticCocoConfig, generate_synthetic_coco  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        argparse.Namespace: the arguments.
    """
    parser = argparse.ArgumentParser(description='Generate synthetic COCO person data')
    parser.add_argument('out_dir', help='dataset root to write')
    parser.add_argument('--num-train', type=int, default=200, help='training images')
    parser.add_argument('--num-val', type=int, default=50, help='validation images')
    parser.add_argument('--seed', type=int, default=0, help='dataset seed (deterministic)')
    parser.add_argument('--img-size', type=int, nargs=2, default=(320, 240),
                        metavar=('W', 'H'), help='image width and height')
    parser.add_argument('--max-people', type=int, default=4, help='at most this many per image')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = SyntheticCocoConfig(img_size=tuple(args.img_size), max_people=args.max_people)
    files = generate_synthetic_coco(args.out_dir, args.num_train, args.num_val, args.seed, cfg,
                                    show_progress=not args.no_progress)
    for split, path in files.items():
        print(f'{split}: {path}')
    return files


if __name__ == '__main__':
    main()
