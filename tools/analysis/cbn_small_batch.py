"""BN vs GN vs CBN (and its options) at small and large batch sizes on a generated task.

The task is made in-process and is deterministic by ``--seed``: 32x32 RGB images of ``--classes``
classes, each class an oriented sinusoidal grating with a class-specific colour mix, random
phase, contrast, brightness and Gaussian noise (so the network needs its norm layers to cope
with varying statistics). A small 4-conv network is trained with SGD for the same number of
*epochs* at every batch size (the learning rate scales linearly with the batch size), then
evaluated in eval mode (running statistics for BN and CBN). CBN uses a window of
``16 / batch - 1`` past iterations (at least 1) unless ``--cbn-buffer`` is given, and a burn-in of
one epoch. The norms:

* ``BN``, ``GN`` (8 groups);
* ``CBN``: the paper's layer (compensated past statistics are constants in the backward, running
  statistics from the current batch);
* ``CBN-diff``: ``differentiable_compensation=True``;
* ``CBN-window``: ``eval_stats='window'``;
* ``CBN-diff-window``: both.

Every (batch, norm, seed) run is seeded (initialisation and data order); per batch size the tool
prints each norm's test accuracy, mean ± std over the seeds and the paired difference to
``--baseline`` with its 95 % Student-t interval (``tools/analysis/ablate.py``'s statistics), and
with ``--out`` writes ``results.jsonl`` (one line per run; finished runs are skipped when the
tool is run again), ``summary.md`` and ``summary.png``.

Example::

    python tools/analysis/cbn_small_batch.py --batch-sizes 2 16 --epochs 8
    python tools/analysis/cbn_small_batch.py --batch-sizes 2 4 16 --seeds 0 1 2 3 4 \
        --norms BN GN CBN CBN-diff CBN-window CBN-diff-window --out work_dirs/cbn_small_batch
"""
import argparse
import json
import math
import os
import os.path as osp
import sys
import time
import types
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmpgnet.models.norms import CBN, link_cbn_layers

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import ablate  # noqa: E402
import analysis_utils  # noqa: E402

#: CBN variants: name -> options of :class:`CBN` beyond the window and the burn-in
CBN_VARIANTS = {
    'CBN': {},
    'CBN-diff': dict(differentiable_compensation=True),
    'CBN-window': dict(eval_stats='window'),
    'CBN-diff-window': dict(differentiable_compensation=True, eval_stats='window'),
}
NORMS = ('BN', 'GN') + tuple(CBN_VARIANTS)


def make_dataset(num: int, classes: int, seed: int, size: int = 32) -> Tuple[Tensor, Tensor]:
    """Generate the grating classification set.

    Args:
        num (int): number of images.
        classes (int): number of classes (orientations).
        seed (int): random seed.
        size (int): image side.

    Returns:
        tuple[Tensor, Tensor]: images (num, 3, size, size) and labels (num,).
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (num, ), generator=gen)
    angle = labels.float() * math.pi / classes + 0.15 * torch.randn(num, generator=gen)
    freq = 0.35 + 0.1 * torch.rand(num, generator=gen)
    phase = 2 * math.pi * torch.rand(num, generator=gen)
    coords = torch.arange(size, dtype=torch.float32) - size / 2
    yy, xx = torch.meshgrid(coords, coords, indexing='ij')
    proj = (xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None])
    grating = torch.sin(freq[:, None, None] * proj + phase[:, None, None])
    colour_gen = torch.Generator().manual_seed(1234)
    colours = torch.rand(classes, 3, generator=colour_gen) + 0.2
    contrast = 0.5 + 2.0 * torch.rand(num, 1, 1, 1, generator=gen)
    brightness = 2.0 * torch.randn(num, 1, 1, 1, generator=gen)
    images = contrast * colours[labels][:, :, None, None] * grating[:, None] + brightness
    images = images + 0.8 * torch.randn(images.shape, generator=gen)
    return images, labels


def norm_layer(kind: str, channels: int, buffer_num: int, burnin: int) -> nn.Module:
    """Build one norm layer.

    Args:
        kind (str): one of :data:`NORMS`.
        channels (int): channels.
        buffer_num (int): CBN window.
        burnin (int): CBN burn-in iterations.

    Returns:
        nn.Module: the layer.
    """
    if kind == 'BN':
        return nn.BatchNorm2d(channels)
    if kind == 'GN':
        return nn.GroupNorm(min(8, channels), channels)
    if kind in CBN_VARIANTS:
        return CBN(channels, buffer_num=buffer_num, burnin_iters=burnin, **CBN_VARIANTS[kind])
    raise ValueError(f'unknown norm {kind!r}')


def make_net(kind: str, classes: int, buffer_num: int, burnin: int) -> nn.Sequential:
    """A 4-conv classifier with the chosen norm after every conv.

    Args:
        kind (str): norm kind.
        classes (int): number of classes.
        buffer_num (int): CBN window.
        burnin (int): CBN burn-in iterations.

    Returns:
        nn.Sequential: the network.
    """
    layers: List[nn.Module] = []
    cin = 3
    for cout, stride in ((16, 1), (32, 2), (64, 2), (64, 2)):
        layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                   norm_layer(kind, cout, buffer_num, burnin), nn.ReLU(inplace=True)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def train_eval(kind: str, batch_size: int, args: argparse.Namespace, seed: int,
               data: Dict[str, Tuple[Tensor, Tensor]]) -> Dict[str, float]:
    """Train one network and evaluate it.

    Args:
        kind (str): norm kind.
        batch_size (int): training batch size.
        args (argparse.Namespace): options.
        seed (int): seed of the initialisation and the shuffling.
        data (dict): ``'train'`` and ``'test'`` (images, labels).

    Returns:
        dict: final training loss (mean of the last epoch), test loss and accuracy, seconds.
    """
    torch.manual_seed(seed)
    train_x, train_y = data['train']
    iters_per_epoch = len(train_x) // batch_size
    buffer_num = args.cbn_buffer if args.cbn_buffer is not None else max(1, 16 // batch_size - 1)
    net = make_net(kind, args.classes, buffer_num, burnin=iters_per_epoch)
    if kind in CBN_VARIANTS:
        report = link_cbn_layers(net, lambda: net(train_x[:batch_size]))
        assert len(report.linked) == report.total, report.skipped
    lr = args.lr * batch_size / 16
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    total = args.epochs * iters_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    gen = torch.Generator().manual_seed(seed)
    start, last_losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_x), generator=gen)
        for i in range(iters_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(net(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if epoch == args.epochs - 1:
                last_losses.append(loss.item())
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        test_x, test_y = data['test']
        logits = net(test_x)
    return dict(train_loss=sum(last_losses) / len(last_losses),
                test_loss=float(F.cross_entropy(logits, test_y)),
                test_acc=float((logits.argmax(1) == test_y).float().mean()),
                seconds=seconds, buffer_num=buffer_num if kind in CBN_VARIANTS else 0,
                running_var_ratio=running_var_ratio(net, train_x))


def running_var_ratio(net: nn.Module, images: Tensor) -> Optional[float]:
    """How well the eval statistics match: running variance / variance of the layer's input.

    For every BN or CBN layer of the trained network (in eval mode), the per-channel variance of
    its input over ``images`` (the training set, as the eval-mode network computes it) is the
    population variance the running variance estimates; the ratio is averaged over channels and
    then over layers. 1 is a perfect match; BN's running variance from small batches comes out
    low (the within-batch variance misses the between-batch part).

    Args:
        net (nn.Module): the trained network, in eval mode.
        images (Tensor): the training images.

    Returns:
        float, optional: the mean ratio, ``None`` for a network without running statistics.
    """
    layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d) or isinstance(m, CBN)]
    if not layers:
        return None
    sums = {m: [0.0, 0.0, 0] for m in layers}

    def accumulate(module: nn.Module, args: Tuple[Tensor, ...]) -> None:
        x = args[0].double()
        entry = sums[module]
        entry[0] = entry[0] + x.sum((0, 2, 3))
        entry[1] = entry[1] + (x * x).sum((0, 2, 3))
        entry[2] += x.shape[0] * x.shape[2] * x.shape[3]

    handles = [m.register_forward_pre_hook(accumulate) for m in layers]
    with torch.no_grad():
        for chunk in images.split(256):
            net(chunk)
    for handle in handles:
        handle.remove()
    ratios = []
    for m, (total, squares, count) in sums.items():
        mean = total / count
        var = squares / count - mean * mean
        ratios.append(float((m.running_var.double() / var.clamp_min(1e-12)).mean()))
    return sum(ratios) / len(ratios)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): arguments.

    Returns:
        argparse.Namespace: options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[2, 16])
    parser.add_argument('--norms', nargs='+', default=['BN', 'GN', 'CBN'], choices=NORMS)
    parser.add_argument('--baseline', default='BN', help='the norm the others are paired with')
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--train-size', type=int, default=512)
    parser.add_argument('--test-size', type=int, default=1024)
    parser.add_argument('--classes', type=int, default=8)
    parser.add_argument('--lr', type=float, default=0.1, help='learning rate at batch size 16')
    parser.add_argument('--cbn-buffer', type=int, default=None)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--out', default=None,
                        help='folder for results.jsonl (resumable), summary.md and summary.png')
    args = parser.parse_args(argv)
    if args.baseline not in args.norms:
        parser.error(f'--baseline {args.baseline} is not among --norms {args.norms}')
    if min(args.batch_sizes) < 1 or args.epochs < 1 or args.train_size < max(args.batch_sizes):
        parser.error('batch sizes and epochs must be >= 1 and train-size >= the largest batch')
    return args


def run_key(args: argparse.Namespace, batch_size: int, kind: str, seed: int) -> dict:
    """What identifies a run in ``results.jsonl`` (everything that changes its result)."""
    return dict(batch=batch_size, norm=kind, seed=seed, epochs=args.epochs,
                train_size=args.train_size, test_size=args.test_size, classes=args.classes,
                lr=args.lr, cbn_buffer=args.cbn_buffer)


def load_records(path: Optional[str]) -> List[dict]:
    """The runs already in ``path`` (none without a file)."""
    if path is None or not osp.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def batch_summary(args: argparse.Namespace, batch_size: int,
                  results: Dict[Tuple[int, str, int], dict]) -> Tuple[str, list]:
    """The markdown table of one batch size: test accuracy per norm, paired with the baseline.

    Args:
        args (argparse.Namespace): options.
        batch_size (int): the batch size.
        results (dict): (batch, norm, seed) -> record.

    Returns:
        tuple[str, list]: the markdown and :func:`ablate.summarize_values`'s rows.
    """
    values = {kind: {s: results[(batch_size, kind, s)]['test_acc'] for s in args.seeds
                     if (batch_size, kind, s) in results} for kind in args.norms}
    rows = ablate.summarize_values(values, args.baseline, args.seeds)
    view = types.SimpleNamespace(metric='test acc', baseline=args.baseline, seeds=args.seeds,
                                 variants=values)
    extra = []  # cells of the second table
    for kind in args.norms:
        runs = [results[(batch_size, kind, s)] for s in args.seeds
                if (batch_size, kind, s) in results]
        if runs:
            ratios = [r['running_var_ratio'] for r in runs
                      if r.get('running_var_ratio') is not None]
            ratio = f'{sum(ratios) / len(ratios):.3f}' if ratios else '-'
            extra.append([kind, int(runs[0]['buffer_num']) or '-',
                          f'{sum(r["train_loss"] for r in runs) / len(runs):.4f}',
                          f'{sum(r["test_loss"] for r in runs) / len(runs):.4f}', ratio,
                          f'{sum(r["seconds"] for r in runs) / len(runs):.1f}'])
    header = ['norm', 'CBN window', 'train loss (last epoch)', 'test loss',
              'running var / population var', 's/run']
    text = (f'### batch {batch_size}\n\n' + ablate.markdown_table(rows, view).split('\n\nΔ')[0]
            + '\n\n' + analysis_utils.format_markdown_table(header, extra, align='lrrrrr')
            + '\n')
    return text, rows


def main(argv: Optional[List[str]] = None) -> Dict[int, list]:
    """Run every (batch size, norm, seed) not yet in ``--out``, print and save the summary.

    Args:
        argv (list[str], optional): arguments.

    Returns:
        dict: batch size -> :func:`ablate.summarize_values`'s rows (metric: test accuracy).
    """
    args = parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = dict(train=make_dataset(args.train_size, args.classes, seed=1000),
                test=make_dataset(args.test_size, args.classes, seed=2000))
    results_file = None if args.out is None else osp.join(args.out, 'results.jsonl')
    if args.out is not None:
        os.makedirs(args.out, exist_ok=True)
    results = {}
    for r in load_records(results_file):
        key = run_key(args, r['batch'], r['norm'], r['seed'])
        if all(r.get(k) == v for k, v in key.items()):
            results[(r['batch'], r['norm'], r['seed'])] = r
    todo = [(b, k, s) for b in args.batch_sizes for k in args.norms for s in args.seeds
            if (b, k, s) not in results]
    start = time.perf_counter()
    for i, (batch_size, kind, seed) in enumerate(todo):
        record = dict(run_key(args, batch_size, kind, seed),
                      **train_eval(kind, batch_size, args, seed, data))
        results[(batch_size, kind, seed)] = record
        if results_file is not None:
            with open(results_file, 'a') as f:
                f.write(json.dumps(record) + '\n')
        elapsed = time.perf_counter() - start
        eta = ablate.format_eta(elapsed / (i + 1) * (len(todo) - i - 1))
        print(f'[{i + 1}/{len(todo)}] batch {batch_size} {kind} seed {seed}: test acc '
              f'{record["test_acc"]:.4f} ({record["seconds"]:.0f} s) ETA {eta}', flush=True)
    texts, summary = [], {}
    for batch_size in args.batch_sizes:
        text, summary[batch_size] = batch_summary(args, batch_size, results)
        texts.append(text)
    note = (f'{args.epochs} epochs of {args.train_size} images, {args.classes} classes, seeds '
            f'{args.seeds}; test accuracy in eval mode ({args.test_size} images). Δ = norm − '
            f'{args.baseline} on the same seed; 95 % CI: mean Δ ± t(0.975, n−1) · sd(Δ) / √n.\n')
    text = '\n'.join(texts) + '\n' + note
    print(text)
    if args.out is not None:
        with open(osp.join(args.out, 'summary.md'), 'w') as f:
            f.write('# CBN at small batch sizes (`tools/analysis/cbn_small_batch.py`)\n\n' + text)
        plot(summary, args, osp.join(args.out, 'summary.png'))
    return summary


def plot(summary: Dict[int, list], args: argparse.Namespace, out_file: str) -> None:
    """Save a PNG: one panel per batch size, each norm's per-seed accuracies and mean ± 95 % CI.

    Args:
        summary (dict): :func:`main`'s return value.
        args (argparse.Namespace): options.
        out_file (str): PNG path.
    """
    plt = analysis_utils.pyplot()
    fig, axes = plt.subplots(1, len(summary), figsize=(1.3 * len(args.norms) * len(summary) + 2,
                                                       4.5), squeeze=False, sharey=True)
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(args.seeds)}
    for ax, (batch_size, rows) in zip(axes[0], summary.items()):
        ablate._plot_panel(ax, rows, 'values', 'mean', 'ci_half', colors)
        ax.set_xticks(range(len(rows)), [r['variant'] for r in rows], rotation=30, ha='right')
        ax.set_title(f'batch {batch_size}')
    axes[0][0].set_ylabel('test accuracy (eval mode)')
    handles, names = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(names, handles))
    axes[0][0].legend(unique.values(), unique.keys(), fontsize=7)
    analysis_utils.save_figure(fig, out_file, dpi=110)


if __name__ == '__main__':
    main()
