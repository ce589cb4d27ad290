"""Train an MMPose or MMDetection config (with mmpgnet components) on MMEngine's Runner.

Examples::

    python tools/train.py configs/pgnet/pgnet_res50_cffm_8xb64-210e_coco-256x192.py
    python tools/train.py CONFIG --synthetic-data data/synthetic_coco --work-dir work_dirs/x
    python tools/train.py CONFIG --resume                # the newest complete one of the work dir
    python tools/train.py CONFIG --resume path/to/epoch_3.pth
    python tools/train.py CONFIG --cfg-options resume=True  # as --resume with no file
    bash tools/dist_train.sh CONFIG 2 --synthetic-data data/synthetic_coco

The registry scope comes from the config's ``default_scope`` (``mmpose`` or ``mmdet``).
"""
import argparse
import os.path as osp
import sys

# an installed mmpgnet first, else this checkout's
sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # noqa: E402

import mmpgnet  # noqa: E402,F401  (registers components, lets torch.load read checkpoints)
from mmpgnet.utils import checkpoint_check  # noqa: E402
from mmpgnet.utils.launch import (add_common_args, build_runner, close_distributed,  # noqa: E402
                                  enable_amp, load_config, run_cli)


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        argparse.Namespace: the arguments.
    """
    parser = argparse.ArgumentParser(description='Train a model with MMEngine')
    add_common_args(parser)
    parser.add_argument(
        '--amp', action='store_true',
        help='mixed precision: fp16 AmpOptimWrapper on CUDA, bfloat16 autocast on CPU')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or (no value) from the latest one in the work dir')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    """Train: resolve what to resume from, check the checkpoint, run MMEngine's Runner.

    Args:
        argv (list[str], optional): arguments; ``sys.argv[1:]`` by default.
    """
    args = parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg)
    resume, option = checkpoint_check.resume_request(args.resume, cfg)
    if resume == 'auto':
        # the newest complete checkpoint (one cut short by a killed save is skipped); without
        # one the run starts as the config says (from its load_from, if it has one)
        latest = checkpoint_check.find_resumable_checkpoint(cfg.work_dir, option)
        cfg.resume = latest is not None
        if latest is not None:
            cfg.load_from = latest
    elif resume is not None:
        if not osp.isfile(resume):
            raise FileNotFoundError(f'--resume: checkpoint {resume} does not exist')
        cfg.resume = True
        cfg.load_from = resume
    runner = build_runner(cfg)
    if resume == 'auto':
        checkpoint_check.check_same_checkpoint_on_every_rank(
            cfg.load_from if cfg.resume else None, option)
    mode = 'resume' if cfg.get('resume') else 'load_from'
    checkpoint_check.check_run_checkpoint(cfg, runner.model, mode)
    runner.train()
    close_distributed()


if __name__ == '__main__':
    run_cli(main)
