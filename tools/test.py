"""Evaluate a checkpoint of an MMPose or MMDetection config with the config's metric.

Examples::

    python tools/test.py CONFIG work_dirs/x/epoch_1.pth
    python tools/test.py CONFIG CKPT --synthetic-data data/synthetic_coco --out results.json
    bash tools/dist_test.sh CONFIG CKPT 2
"""
import argparse
import json
import os.path as osp
import sys

# an installed mmpgnet first, else this checkout's
sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # noqa: E402

import mmpgnet  # noqa: E402,F401  (registers components, lets torch.load read checkpoints)
from mmpgnet.utils.checkpoint_check import check_run_checkpoint  # noqa: E402
from mmpgnet.utils.launch import (add_common_args, build_runner, close_distributed,  # noqa: E402
                                  load_config, run_cli)


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        argparse.Namespace: the arguments.
    """
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint with MMEngine')
    add_common_args(parser)
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='write the metrics as JSON to this file')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    cfg = load_config(args, mode='test')
    cfg.load_from = args.checkpoint
    runner = build_runner(cfg)
    check_run_checkpoint(cfg, runner.model, 'test')
    metrics = runner.test()
    close_distributed()
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
    return metrics


if __name__ == '__main__':
    run_cli(main)
