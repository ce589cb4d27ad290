"""BN vs GN vs CBN at small and large batch sizes on a generated image-classification task.

The task is made in-process and is deterministic by ``--seed``: 32x32 RGB images of ``--classes``
classes, each class an oriented sinusoidal grating with a class-specific colour mix, random
phase, contrast, brightness and Gaussian noise (so the network needs its norm layers to cope
with varying statistics). A small 4-conv network is trained with SGD for the same number of
*epochs* at every batch size (the learning rate scales linearly with the batch size), then
evaluated in eval mode (running statistics for BN and CBN). CBN uses a window of
``16 / batch - 1`` past iterations (at least 1) unless ``--cbn-buffer`` is given, and a burn-in of
one epoch.

Example::

    python tools/analysis/cbn_small_batch.py --batch-sizes 2 16 --epochs 8
"""
import argparse
import math
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmpgnet.models.norms import CBN, link_cbn_layers


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
        kind (str): ``'BN'``, ``'GN'`` or ``'CBN'``.
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
    if kind == 'CBN':
        return CBN(channels, buffer_num=buffer_num, burnin_iters=burnin)
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
    if kind == 'CBN':
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
    net.eval()
    with torch.no_grad():
        test_x, test_y = data['test']
        logits = net(test_x)
    return dict(train_loss=sum(last_losses) / len(last_losses),
                test_loss=float(F.cross_entropy(logits, test_y)),
                test_acc=float((logits.argmax(1) == test_y).float().mean()),
                seconds=time.perf_counter() - start, buffer_num=buffer_num if kind == 'CBN' else 0)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): arguments.

    Returns:
        argparse.Namespace: options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[2, 16])
    parser.add_argument('--norms', nargs='+', default=['BN', 'GN', 'CBN'],
                        choices=['BN', 'GN', 'CBN'])
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--train-size', type=int, default=512)
    parser.add_argument('--test-size', type=int, default=1024)
    parser.add_argument('--classes', type=int, default=8)
    parser.add_argument('--lr', type=float, default=0.1, help='learning rate at batch size 16')
    parser.add_argument('--cbn-buffer', type=int, default=None)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.epochs < 1 or args.train_size < max(args.batch_sizes):
        parser.error('batch sizes and epochs must be >= 1 and train-size >= the largest batch')
    return args


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Run every (batch size, norm, seed) and print a table.

    Args:
        argv (list[str], optional): arguments.

    Returns:
        list[dict]: one row per batch size and norm, averaged over seeds.
    """
    args = parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = dict(train=make_dataset(args.train_size, args.classes, seed=1000),
                test=make_dataset(args.test_size, args.classes, seed=2000))
    rows = []
    print('| batch | norm | CBN window | train loss (last epoch) | test loss | test acc | s |')
    print('| ---: | --- | ---: | ---: | ---: | ---: | ---: |')
    for batch_size in args.batch_sizes:
        for kind in args.norms:
            runs = [train_eval(kind, batch_size, args, seed, data) for seed in args.seeds]
            row = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
            row.update(batch=batch_size, norm=kind)
            rows.append(row)
            print(f"| {batch_size} | {kind} | {int(row['buffer_num']) or '-'} | "
                  f"{row['train_loss']:.4f} | {row['test_loss']:.4f} | {row['test_acc']:.4f} | "
                  f"{row['seconds']:.0f} |", flush=True)
    print(f'\n{args.epochs} epochs of {args.train_size} images, {args.classes} classes, '
          f'seeds {args.seeds}; test in eval mode ({args.test_size} images).')
    return rows


if __name__ == '__main__':
    main()
