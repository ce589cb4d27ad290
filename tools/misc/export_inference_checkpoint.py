"""Export an inference checkpoint: the model weights without PGS guidance heads or training state.

Example::

    python tools/misc/export_inference_checkpoint.py work_dirs/x/epoch_210.pth pgnet_r50.pth

The result has only ``meta`` and ``state_dict`` (no ``guidance.*`` keys, no optimizer or message
hub) and loads into the model with or without ``guidance_cfg``.
"""
import argparse
import os.path as osp
import sys

sys.path.append(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # noqa: E402

import torch  # noqa: E402

import mmpgnet  # noqa: E402,F401  (lets torch.load read MMEngine checkpoints)
from mmpgnet.models.pose_estimators import PGNetPoseEstimator  # noqa: E402


def export(src: str, dst: str) -> int:
    """Write the inference checkpoint of ``src`` to ``dst``.

    Args:
        src (str): a training checkpoint.
        dst (str): output path.

    Returns:
        int: the number of guidance entries dropped.
    """
    if not osp.isfile(src):
        raise FileNotFoundError(f'checkpoint {src} does not exist')
    ckpt = torch.load(src, map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    stripped = PGNetPoseEstimator.strip_guidance(state)
    torch.save(dict(meta=ckpt.get('meta', {}), state_dict=stripped), dst)
    return len(state) - len(stripped)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Export an inference checkpoint')
    parser.add_argument('src', help='training checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    args = parser.parse_args(argv)
    dropped = export(args.src, args.dst)
    print(f'wrote {args.dst} ({dropped} guidance entries dropped)')


if __name__ == '__main__':
    main()
