"""Plot the training loss and the validation metric of an MMEngine run (vis_data/scalars.json).

Example::

    python tools/analysis/plot_training_curves.py work_dirs/demo --metric coco/AP
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import analysis_utils  # noqa: E402


def read_scalars(work_dir: str) -> Tuple[List[dict], List[dict]]:
    """Read the training and validation records of the newest run in ``work_dir``.

    Args:
        work_dir (str): an MMEngine work dir (holding ``<timestamp>/vis_data/scalars.json``).

    Returns:
        tuple: (training records with ``loss``, validation records without it).

    Raises:
        FileNotFoundError: if the work dir has no scalars.json.
    """
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(f'no <timestamp>/vis_data/scalars.json under {work_dir}')
    train, val = [], []
    for path in files:  # a resumed run continues in a new timestamp folder
        with open(path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    (train if 'loss' in rec else val).append(rec)
    return train, val


def plot_curves(work_dir: str, out_file: str, metric: str = 'coco/AP') -> Dict[str, float]:
    """Save a two-panel PNG: training loss per iteration, validation ``metric`` per epoch.

    Args:
        work_dir (str): the run's work dir.
        out_file (str): PNG path.
        metric (str): validation metric key.

    Returns:
        dict: the last loss and the last and best metric values.
    """
    plt = analysis_utils.pyplot()
    train, val = read_scalars(work_dir)
    if not train:
        raise ValueError(f'{work_dir}: the log has no training loss records')
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r['step'] for r in train], [r['loss'] for r in train], lw=1, label='loss (total)')
    kpt = [(r['step'], r['loss_kpt']) for r in train if 'loss_kpt' in r]
    auxiliary = any(k.startswith('loss_') and k != 'loss_kpt' for r in train for k in r)
    if kpt and auxiliary:  # e.g. guidance losses: show the main head's loss apart
        ax1.plot(*zip(*kpt), lw=1, label='loss_kpt (main head)')
    ax1.legend()
    ax1.set(xlabel='iteration', ylabel='training loss', title='Training loss', yscale='log')
    ax1.grid(alpha=0.3)
    points = [(r['step'], r[metric]) for r in val if metric in r]
    if points:
        ax2.plot(*zip(*points), marker='o')
    ax2.set(xlabel='epoch', ylabel=metric, title=f'Validation {metric}', ylim=(0, 1))
    ax2.grid(alpha=0.3)
    analysis_utils.save_figure(fig, out_file, dpi=110)
    summary = dict(last_loss=train[-1]['loss'])
    if points:
        summary.update(last_metric=points[-1][1], best_metric=max(v for _, v in points))
    return summary


def main(argv=None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(description='Plot loss and validation curves of a run')
    parser.add_argument('work_dir')
    parser.add_argument('--metric', default='coco/AP')
    parser.add_argument('--out', help='PNG path (default: <work_dir>/training_curves.png)')
    args = parser.parse_args(argv)
    out = args.out or osp.join(args.work_dir, 'training_curves.png')
    summary = plot_curves(args.work_dir, out, args.metric)
    print(f'saved {out}: ' + ', '.join(f'{k}={v:.4f}' for k, v in summary.items()))
    return summary


if __name__ == '__main__':
    main()
