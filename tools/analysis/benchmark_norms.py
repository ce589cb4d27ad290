"""Time and memory of a training iteration with BN, GN, SyncBN and CBN (buffer_num 1..3).

CBN runs with its default grid estimate of the second-moment gradient (``grad_sample_stride=2``)
and, as ``CBN-k3-exact``, with the exact one (``grad_sample_stride=1``), so the cost of each is in
the same table.

Each variant runs in a fresh subprocess: the model of an MMPose top-down heatmap config (default:
the stock ResNet-50 256x192 one, run at a smaller input) is built with the backbone's
``norm_cfg`` replaced, trained for ``--warmup + --iters`` SGD iterations on generated images and
heatmap targets (the same seed for every variant), and the median time of the last ``--iters``
iterations is reported. Memory is the peak resident set size (``ru_maxrss``) of that subprocess,
so it includes the interpreter, the libraries and the model (on GPU: ``max_memory_allocated``).
SyncBN on one process is reverted to plain BN as MMEngine's Runner does when not distributed; the
table says so. CBN layers are linked to their convs by tracing one forward, as ``CBNHook`` does,
with ``burnin_iters=0``.

The default run is the R50 config's own input (256x192) at batch 16, about 5 s per iteration on
a 2-core CPU; ``--input-size 128 96 --batch-size 8`` is quicker, but there CBN's fixed per-layer
work (dozens of small tensor ops per layer for its window) weighs more against the convolutions.

Example::

    python tools/analysis/benchmark_norms.py --iters 3 --warmup 2 --out work_dirs/benchmark_norms
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import analysis_utils  # noqa: E402

DEFAULT_CONFIG = ('mmpose::body_2d_keypoint/topdown_heatmap/coco/'
                  'td-hm_res50_8xb64-210e_coco-256x192.py')

#: name -> (norm_cfg, note)
VARIANTS: Dict[str, tuple] = {
    'BN': (dict(type='BN'), ''),
    'GN': (dict(type='GN', num_groups=32), ''),
    'SyncBN': (dict(type='SyncBN'), 'one process: reverted to BN as the Runner does'),
    'CBN-k1': (dict(type='CBN', buffer_num=1), ''),
    'CBN-k2': (dict(type='CBN', buffer_num=2), ''),
    'CBN-k3': (dict(type='CBN', buffer_num=3), ''),
    'CBN-k3-exact': (dict(type='CBN', buffer_num=3, grad_sample_stride=1),
                     'exact d nu/dW (grad_sample_stride=1)'),
}


def parse_args(argv: List[str] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        argparse.Namespace: the options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='MMPose top-down heatmap config (its backbone norm_cfg is replaced)')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--input-size', type=int, nargs=2, default=[256, 192], metavar=('H', 'W'),
                        help='the R50 config\'s own 256x192 by default; at small inputs the '
                        'fixed per-layer cost of CBN weighs more')
    parser.add_argument('--warmup', type=int, default=3, help='untimed iterations (fill windows)')
    parser.add_argument('--iters', type=int, default=5, help='timed iterations')
    parser.add_argument('--repeats', type=int, default=2,
                        help='round-robin runs of every variant; the fastest run is kept')
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cuda' if _cuda_available() else 'cpu')
    parser.add_argument('--out', default='work_dirs/benchmark_norms')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error('--iters must be >= 1, --warmup >= 0 and --batch-size >= 1')
    return args


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def build_model(config: str, norm_cfg: dict, device: str):
    """Build the config's pose model with ``norm_cfg`` in its backbone, without pretrained init.

    Args:
        config (str): config path or ``mmpose::`` path.
        norm_cfg (dict): the norm config.
        device (str): target device.

    Returns:
        nn.Module: the model in train mode.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmpose.registry import MODELS

    import mmpgnet  # noqa: F401  (registers CBN)
    cfg = analysis_utils.load_config(config, init_scope=True)
    cfg.model.backbone.norm_cfg = dict(norm_cfg, requires_grad=True)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.backbone.norm_eval = False
    model = MODELS.build(cfg.model)
    model = revert_sync_batchnorm(model)
    return model.to(device).train()


def make_batch(model, batch_size: int, input_size: List[int], seed: int, device: str):
    """Generate normalised images and heatmap targets for a top-down heatmap model.

    Args:
        model (nn.Module): the pose model (its head gives the number of keypoints).
        batch_size (int): images per batch.
        input_size (list[int]): (H, W) of the images; heatmaps are 1/4 of it.
        seed (int): random seed.
        device (str): target device.

    Returns:
        tuple[Tensor, list]: images and ``PoseDataSample`` list.
    """
    import torch
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample
    gen = torch.Generator().manual_seed(seed)
    h, w = input_size
    k = model.head.out_channels
    images = torch.randn(batch_size, 3, h, w, generator=gen).to(device)
    samples = []
    for _ in range(batch_size):
        sample = PoseDataSample()
        sample.gt_fields = PixelData(
            heatmaps=torch.rand(k, h // 4, w // 4, generator=gen).to(device))
        sample.gt_instance_labels = InstanceData(keypoint_weights=torch.ones(1, k, device=device))
        sample.set_metainfo(dict(input_size=(w, h)))
        samples.append(sample)
    return images, samples


def run_worker(args: argparse.Namespace) -> dict:
    """Train one variant and return its measurements (runs inside the subprocess).

    Args:
        args (argparse.Namespace): options; ``args.worker`` names the variant.

    Returns:
        dict: variant, ms per iteration, peak memory (MiB), final loss, compensated layers.
    """
    import torch

    from mmpgnet.models.norms import link_cbn_layers
    torch.manual_seed(args.seed)
    norm_cfg, note = VARIANTS[args.worker]
    model = build_model(args.config, norm_cfg, args.device)
    images, samples = make_batch(model, args.batch_size, args.input_size, args.seed, args.device)
    model.test_cfg = dict(model.test_cfg or {}, flip_test=False)
    report = link_cbn_layers(model, lambda: model.loss(images, samples))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    def step():
        losses = model.loss(images, samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    timing = analysis_utils.time_calls(step, args.iters, args.warmup,
                                       sync=analysis_utils.device_sync(args.device))
    if args.device.startswith('cuda'):
        peak = torch.cuda.max_memory_allocated() / 2**20
        how = 'torch.cuda.max_memory_allocated'
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        how = 'peak RSS of the subprocess'
    return dict(variant=args.worker, ms=timing.median_ms, peak_mib=peak,
                memory=how, loss=float(timing.last), linked=len(report.linked),
                skipped=len(report.skipped), note=note)


def run_variant(args: argparse.Namespace, name: str) -> dict:
    """Run one variant in a fresh Python process.

    Args:
        args (argparse.Namespace): options.
        name (str): variant name.

    Returns:
        dict: what :func:`run_worker` returned.
    """
    argv = [sys.executable, osp.abspath(__file__), '--worker', name, '--config', args.config,
            '--batch-size', str(args.batch_size), '--input-size', *map(str, args.input_size),
            '--warmup', str(args.warmup), '--iters', str(args.iters), '--lr', str(args.lr),
            '--seed', str(args.seed), '--device', args.device, '--out', args.out]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'variant {name} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_table(rows: List[dict]) -> str:
    """Render the results with ratios to BN (or to the first row when BN was not run).

    Args:
        rows (list[dict]): results of :func:`run_worker`.

    Returns:
        str: a Markdown table.
    """
    base = next((r for r in rows if r['variant'] == 'BN'), rows[0])
    header = ['variant', 'ms/iter', 'peak MiB', 'loss', f"time / {base['variant']}",
              f"memory / {base['variant']}", 'CBN linked', 'note']
    cells = [[r['variant'], f"{r['ms']:.0f}", f"{r['peak_mib']:.0f}", f"{r['loss']:.5f}",
              f"{r['ms'] / base['ms']:.3f}", f"{r['peak_mib'] / base['peak_mib']:.3f}",
              f"{r['linked']}/{r['linked'] + r['skipped']}", r['note']] for r in rows]
    return analysis_utils.format_markdown_table(header, cells, align='lrrrrrrl')


def save_plot(rows: List[dict], path: str) -> None:
    """Bar plots of time and memory ratios to BN (matplotlib Agg).

    Args:
        rows (list[dict]): results.
        path (str): PNG path.
    """
    plt = analysis_utils.pyplot()
    base = next((r for r in rows if r['variant'] == 'BN'), rows[0])
    names = [r['variant'] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in zip(axes, ('ms', 'peak_mib'), ('time / iteration', 'peak memory')):
        ax.bar(names, [r[key] / base[key] for r in rows], color='tab:blue')
        ax.axhline(1.0, color='gray', lw=0.8)
        ax.set_title(f'{title} (ratio to {base["variant"]})')
        ax.tick_params(axis='x', rotation=30)
    analysis_utils.save_figure(fig, path, dpi=100)


def main(argv: List[str] = None) -> None:
    """Run the benchmark (or one worker) and print/save the results.

    Args:
        argv (list[str], optional): command line.
    """
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(args)))
        return
    runs: Dict[str, List[dict]] = {name: [] for name in args.variants}
    for _ in range(max(1, args.repeats)):  # round-robin: load from other processes hits all
        for name in args.variants:
            runs[name].append(run_variant(args, name))
            print(f"{name}: {runs[name][-1]['ms']:.0f} ms/iter, "
                  f"{runs[name][-1]['peak_mib']:.0f} MiB", flush=True)
    rows = [min(runs[name], key=lambda r: r['ms']) for name in args.variants]
    table = format_table(rows)
    print(f'\nconfig: {args.config}\nbatch {args.batch_size}, input {args.input_size}, '
          f'device {args.device}, median of {args.iters} iterations after {args.warmup} warm-up, '
          f'fastest of {max(1, args.repeats)} runs; '
          f"memory: {rows[0]['memory']}\n")
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'benchmark_norms.json'), 'w') as f:
        json.dump(dict(args=vars(args), rows=rows), f, indent=2)
    save_plot(rows, osp.join(args.out, 'benchmark_norms.png'))
    print(f'\nsaved {osp.join(args.out, "benchmark_norms.json")} and benchmark_norms.png')


if __name__ == '__main__':
    main()
