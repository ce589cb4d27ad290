"""Step time and peak memory of mmpgnet's components on a GPU, each against its peer.

Every comparison is measured in this run, ours and the peer on the same device, sizes and data:

* **PGNet vs SimpleBaseline** (needs mmpose): a training step (``model.train_step``: data
  preprocessing, forward, loss, backward, optimizer step through MMEngine's ``OptimWrapper``, or
  ``AmpOptimWrapper`` for float16 AMP) of the PGNet pose model (ResNet-50 + CFFM + PGS guidance,
  ``configs/pgnet/pgnet_res50_cffm_guidance_8xb64-210e_coco-256x192.py``) against MMPose's
  SimpleBaseline (``td-hm_res50_8xb64-210e_coco-256x192.py``), at 256x192, batch 32.
* **CBN vs BN**: a training step of a ResNet-50-shaped stack of mmcv ``ConvModule`` bottlenecks
  (3-4-6-3 blocks, 64-2048 channels) with ``norm_cfg=dict(type='CBN')`` (linked to its convs,
  window full: the step compensates) against the same stack with BN.
* **compiled PGNet vs eager PGNet** (``--only compile``, not run by default: it compiles for
  a minute or more): the same PGNet training step with ``model.train_step`` wrapped in
  ``torch.compile`` (what MMEngine's ``compile=True`` does) against the eager step; the notes
  give the time of the first, compiling, step.
* **fused CDIoU vs DIoU** and **fused GIoU vs GIoU**: forward + backward of the loss over 1e6
  box pairs, against MMDetection's ``DIoULoss`` / ``GIoULoss`` (or, where mmdet does not import,
  the same formulas written as plain autograd torch code).

Each measurement runs ``--warmup`` untimed steps, then ``--repeats`` steps, each timed between
two ``torch.cuda.synchronize()``; the table gives the median. Peak memory is
``torch.cuda.max_memory_allocated`` over the timed steps (reset before them; it includes the
model, its gradients and optimizer state, and the data of that step). Ratios are ours / peer.
TF32 stays at PyTorch's defaults and ``cudnn.benchmark`` off, as MMEngine runs by default.

Without a CUDA device it prints one line and exits with status 2, unless ``--device cpu`` is
given: then the same table is made on the CPU with small default sizes (a check that the tool
works; CPU memory is not measured).

Examples::

    python tools/analysis/gpu_report.py --out work_dirs/gpu_report.md
    python tools/analysis/gpu_report.py --device cpu --repeats 2
"""
import argparse
import gc
import os
import os.path as osp
import platform
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.append(REPO_ROOT)  # fallback only: an installed mmpgnet comes first
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import analysis_utils  # noqa: E402

import mmpgnet  # noqa: E402,F401  (registers CFFM, CBN, the losses)
from mmpgnet.utils.optional_packages import package_unavailable_reason  # noqa: E402

PGNET_CONFIG = osp.join(REPO_ROOT,
                        'configs/pgnet/pgnet_res50_cffm_guidance_8xb64-210e_coco-256x192.py')
SIMPLE_BASELINE_CONFIG = \
    'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py'
NO_CUDA = 'no CUDA device: nothing to report'

#: default sizes per device type (the CPU ones only check that the tool works)
DEFAULTS: Dict[str, Dict] = dict(
    cuda=dict(batch_size=32, input_size=(256, 192), pairs=1_000_000, warmup=5, repeats=20,
              precisions=('fp32', 'amp')),
    cpu=dict(batch_size=2, input_size=(128, 96), pairs=10_000, warmup=1, repeats=3,
             precisions=('fp32', )))
#: ResNet-50's stages: (blocks, bottleneck width, output channels, stride)
R50_STAGES = ((3, 64, 256, 1), (4, 128, 512, 2), (6, 256, 1024, 2), (3, 512, 2048, 2))


@dataclass
class Measure:
    """One measured step: median time, peak memory and the last loss.

    Attributes:
        ms (float): median step time in milliseconds.
        peak_mib (float, optional): peak allocated device memory (None on the CPU).
        loss (float): loss of the last step (NaN shows a numerical failure).
        first_s (float, optional): seconds of the first warm-up step (lazy initialisation,
            compilation); None without warm-up.
    """

    ms: float
    peak_mib: Optional[float]
    loss: float
    first_s: Optional[float] = None


@dataclass
class Row:
    """A comparison of ours against its peer."""

    comparison: str
    precision: str
    size: str
    ours: Measure
    peer: Measure
    notes: List[str] = field(default_factory=list)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line; sizes left out take the device's defaults.

    Args:
        argv (list[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        argparse.Namespace: the options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda',
                        help='cuda (default; exits with status 2 without one) or cpu')
    parser.add_argument('--batch-size', type=int, help='images per step (cuda 32, cpu 2)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size, a multiple of 32 (cuda 256 192, cpu 128 96)')
    parser.add_argument('--pairs', type=int, help='box pairs of the loss steps (cuda 1e6)')
    parser.add_argument('--warmup', type=int, help='untimed steps first (cuda 5, cpu 1)')
    parser.add_argument('--repeats', type=int, help='timed steps, median kept (cuda 20, cpu 3)')
    parser.add_argument('--precisions', nargs='+', choices=['fp32', 'amp'],
                        help='fp32 and/or float16 AMP (cuda: both; cpu: fp32 only)')
    parser.add_argument('--only', nargs='+', choices=['pose', 'norm', 'loss', 'compile'],
                        default=['pose', 'norm', 'loss'],
                        help='comparisons to run (default: pose norm loss; compile only when '
                        'named)')
    parser.add_argument('--out', help='also write the report to this Markdown file')
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == 'cpu' and 'amp' in args.precisions:
        parser.error('--precisions amp needs CUDA (float16 AmpOptimWrapper)')
    if min(args.batch_size, args.pairs, args.repeats) < 1 or args.warmup < 0:
        parser.error('--batch-size, --pairs and --repeats must be >= 1, --warmup >= 0')
    return args


# --------------------------------------------------------------------------- timing
def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def measure(step: Callable[[], Tensor], device: torch.device, warmup: int,
            repeats: int) -> Measure:
    """Median time of ``step`` after ``warmup`` untimed calls, and the peak memory.

    Args:
        step (Callable[[], Tensor]): one step; returns its loss.
        device (torch.device): the device it runs on.
        warmup (int): untimed calls first.
        repeats (int): timed calls.

    Returns:
        Measure: the median time, the peak memory of the timed calls and the last loss.
    """
    _release(device)  # what earlier measurements left
    sync = analysis_utils.device_sync(device)
    first_s, _ = analysis_utils.warm_up(step, warmup, sync)
    if sync is not None:
        sync()
        torch.cuda.reset_peak_memory_stats(device)
    timing = analysis_utils.time_calls(step, repeats, sync=sync)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    return Measure(timing.median_ms, peak, float(timing.last.detach()), first_s)


def _optim_wrapper(params: List[nn.Parameter], precision: str, optimizer: Callable):
    """MMEngine's ``OptimWrapper`` (fp32) or ``AmpOptimWrapper`` (float16, dynamic loss scale).

    Args:
        params (list[nn.Parameter]): the parameters to train.
        precision (str): ``'fp32'`` or ``'amp'``.
        optimizer (Callable): ``optimizer(params)`` -> a torch optimizer.

    Returns:
        OptimWrapper: the wrapper.
    """
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    if precision == 'amp':
        return AmpOptimWrapper(optimizer=optimizer(params), dtype='float16',
                               loss_scale='dynamic')
    return OptimWrapper(optimizer=optimizer(params))


# --------------------------------------------------------------------------- pose models
def build_pose_model(config: str, device: torch.device) -> nn.Module:
    """Build an MMPose top-down config's model without pretrained weights, in train mode.

    Args:
        config (str): config path or ``mmpose::`` name.
        device (torch.device): target device.

    Returns:
        nn.Module: the model.
    """
    from mmengine.registry import MODELS
    cfg = analysis_utils.load_config(config, init_scope=True)
    cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model).to(device).train()


def pose_batch(model: nn.Module, batch_size: int, input_size: Tuple[int, int]) -> Dict:
    """A data batch as MMPose's loader gives it: uint8 images and heatmap targets (on the CPU).

    Args:
        model (nn.Module): the pose model (its head gives the number of keypoints).
        batch_size (int): images per batch.
        input_size (tuple[int, int]): (H, W); heatmaps are a quarter of it.

    Returns:
        dict: ``inputs`` and ``data_samples`` for ``model.train_step``.
    """
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample
    gen = torch.Generator().manual_seed(0)
    h, w = input_size
    k = model.head.out_channels
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8))
        sample = PoseDataSample()
        sample.gt_fields = PixelData(heatmaps=torch.rand(k, h // 4, w // 4, generator=gen))
        sample.gt_instance_labels = InstanceData(keypoint_weights=torch.ones(1, k))
        sample.set_metainfo(dict(input_size=(w, h)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def measure_pose(config: str, args: argparse.Namespace, device: torch.device,
                 precision: str, compiled: bool = False) -> Measure:
    """Train-step time and memory of one pose config (Adam, as the configs).

    Args:
        config (str): config path or ``mmpose::`` name.
        args (argparse.Namespace): the options (sizes, warm-up, repeats).
        device (torch.device): the device.
        precision (str): ``'fp32'`` or ``'amp'``.
        compiled (bool): wrap ``model.train_step`` in ``torch.compile``, as MMEngine's
            ``compile=True`` does.

    Returns:
        Measure: the measurement.
    """
    torch.manual_seed(0)
    model = build_pose_model(config, device)
    wrapper = _optim_wrapper(list(model.parameters()), precision,
                             lambda params: torch.optim.Adam(params, lr=5e-4))
    data = pose_batch(model, args.batch_size, tuple(args.input_size))
    train_step = torch.compile(model.train_step) if compiled else model.train_step

    def step() -> Tensor:
        return train_step(data, wrapper)['loss']

    return measure(step, device, args.warmup, args.repeats)


def compare_pose(args: argparse.Namespace, device: torch.device) -> List[Row]:
    """PGNet (CFFM + guidance) against SimpleBaseline, each precision."""
    size = f'{args.input_size[0]}x{args.input_size[1]}, batch {args.batch_size}'
    return [Row('PGNet R50 (CFFM + guidance) vs SimpleBaseline R50: train step', precision,
                size, measure_pose(PGNET_CONFIG, args, device, precision),
                measure_pose(SIMPLE_BASELINE_CONFIG, args, device, precision))
            for precision in args.precisions]


def compare_compile(args: argparse.Namespace, device: torch.device) -> List[Row]:
    """PGNet's train step under ``torch.compile`` against the eager step, each precision.

    Both take at least 3 warm-up steps: the second compiled step compiles again (Adam's state
    appears after the first; on the CPU, demo model: 23 s, 2.2 s, then 0.1 s steps), and no
    timed step may include a compilation.
    """
    args = argparse.Namespace(**dict(vars(args), warmup=max(args.warmup, 3)))
    size = f'{args.input_size[0]}x{args.input_size[1]}, batch {args.batch_size}'
    rows = []
    for precision in args.precisions:
        ours = measure_pose(PGNET_CONFIG, args, device, precision, compiled=True)
        peer = measure_pose(PGNET_CONFIG, args, device, precision)
        notes = [f'first step: compiled {ours.first_s:.1f} s, eager {peer.first_s:.1f} s'
                 if ours.first_s is not None and peer.first_s is not None else '']
        rows.append(Row('PGNet R50: torch.compile(train_step) vs eager', precision, size,
                        ours, peer, notes))
    return rows


# --------------------------------------------------------------------------- norms
class Bottleneck(nn.Module):
    """ResNet's bottleneck (1x1, 3x3, 1x1 ConvModules and a projected shortcut) with any norm.

    Args:
        in_channels (int): input channels.
        width (int): channels of the 3x3 conv.
        out_channels (int): output channels.
        stride (int): stride of the 3x3 conv.
        norm_cfg (dict): mmcv norm config of every conv.
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int,
                 norm_cfg: dict) -> None:
        super().__init__()
        from mmcv.cnn import ConvModule
        self.conv1 = ConvModule(in_channels, width, 1, norm_cfg=norm_cfg)
        self.conv2 = ConvModule(width, width, 3, stride=stride, padding=1, norm_cfg=norm_cfg)
        self.conv3 = ConvModule(width, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvModule(in_channels, out_channels, 1, stride=stride,
                                       norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


def resnet50_stack(norm_cfg: dict) -> nn.Sequential:
    """A ResNet-50-shaped stack (stem + 16 bottlenecks) whose every norm is ``norm_cfg``."""
    from mmcv.cnn import ConvModule
    layers = [ConvModule(3, 64, 7, stride=2, padding=3, norm_cfg=norm_cfg),
              nn.MaxPool2d(3, stride=2, padding=1)]
    in_channels = 64
    for blocks, width, out_channels, stride in R50_STAGES:
        for i in range(blocks):
            layers.append(Bottleneck(in_channels, width, out_channels, stride if i == 0 else 1,
                                     norm_cfg))
            in_channels = out_channels
    return nn.Sequential(*layers)


def measure_norm(norm_cfg: dict, args: argparse.Namespace, device: torch.device,
                 precision: str) -> Tuple[Measure, str]:
    """Train-step time and memory of the stack with ``norm_cfg`` (SGD, momentum 0.9).

    CBN layers are linked to their convs (as ``CBNHook`` does) and, with burn-in 0, compensate
    from the second step on; the warm-up fills their windows.

    Returns:
        tuple[Measure, str]: the measurement and a note (CBN layers linked / compensating).
    """
    from mmpgnet.models.norms import link_cbn_layers, named_cbn_layers
    torch.manual_seed(0)
    model = resnet50_stack(norm_cfg).to(device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, *args.input_size, generator=gen).to(device)
    note = ''
    cbns = named_cbn_layers(model)
    if cbns:
        report = link_cbn_layers(model, lambda: model(x))
        note = f'CBN linked {len(report.linked)}/{report.total}'
    wrapper = _optim_wrapper(list(model.parameters()), precision,
                             lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9))

    def step() -> Tensor:
        with wrapper.optim_context(model):
            loss = model(x).float().square().mean()
        wrapper.update_params(loss)
        return loss.detach()

    result = measure(step, device, max(args.warmup, 4 if cbns else 0), args.repeats)
    if cbns:
        active = sum(bool(m.compensating) for m in cbns.values())
        note += f', compensating {active}/{len(cbns)}'
    return result, note


def compare_norms(args: argparse.Namespace, device: torch.device) -> List[Row]:
    """CBN (window 3, full) against BN in the ResNet-50-shaped stack, each precision."""
    size = f'{args.input_size[0]}x{args.input_size[1]}, batch {args.batch_size}'
    rows = []
    for precision in args.precisions:
        ours, note = measure_norm(dict(type='CBN', buffer_num=3), args, device, precision)
        peer, _ = measure_norm(dict(type='BN'), args, device, precision)
        rows.append(Row('CBN (k=3, linked) vs BN: R50-shaped ConvModule stack, train step',
                        precision, size, ours, peer, [note]))
    return rows


# --------------------------------------------------------------------------- losses
def _plain_iou_parts(pred: Tensor, target: Tensor, eps: float):
    """IoU and enclosing box of aligned boxes, as plain autograd ops (MMDetection's formulas)."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    overlap = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = area_p + area_t - overlap
    enclose_wh = (torch.max(pred[:, 2:], target[:, 2:]) -
                  torch.min(pred[:, :2], target[:, :2])).clamp(min=0)
    return overlap, union, enclose_wh


class PlainDIoULoss(nn.Module):
    """DIoU loss as plain autograd torch code (MMDetection's ``diou_loss``, mean reduction)."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        eps = 1e-6
        overlap, union, enclose_wh = _plain_iou_parts(pred, target, eps)
        ious = overlap / (union + eps)
        c2 = enclose_wh[:, 0]**2 + enclose_wh[:, 1]**2 + eps
        rho2 = (((target[:, :2] + target[:, 2:]) - (pred[:, :2] + pred[:, 2:]))**2).sum(-1) / 4
        return (1 - ious + rho2 / c2).mean()


class PlainGIoULoss(nn.Module):
    """GIoU loss as plain autograd torch code (MMDetection's ``giou_loss``, mean reduction)."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        eps = 1e-6
        overlap, union, enclose_wh = _plain_iou_parts(pred, target, eps)
        union = union.clamp(min=eps)
        enclose = (enclose_wh[:, 0] * enclose_wh[:, 1]).clamp(min=eps)
        gious = overlap / union - (enclose - union) / enclose
        return (1 - gious).mean()


def loss_peers() -> Tuple[Dict[str, nn.Module], str]:
    """MMDetection's DIoU / GIoU losses, or the plain torch ones where mmdet does not import."""
    if package_unavailable_reason('mmdet') is None:
        from mmdet.models.losses import DIoULoss, GIoULoss
        return dict(diou=DIoULoss(), giou=GIoULoss()), 'mmdet'
    return dict(diou=PlainDIoULoss(), giou=PlainGIoULoss()), 'plain torch autograd'


def box_pairs(n: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """``n`` aligned (pred, target) box pairs, mostly overlapping."""
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=gen) * 500
    wh = torch.rand(n, 2, generator=gen) * 100 + 1
    target = torch.cat([xy, xy + wh], 1)
    pred = target + torch.randn(n, 4, generator=gen) * 10
    pred[:, 2:] = torch.maximum(pred[:, 2:], pred[:, :2] + 1)
    return pred.to(device), target.to(device)


def measure_loss(loss: nn.Module, args: argparse.Namespace, device: torch.device) -> Measure:
    """Forward + backward time and memory of ``loss(pred, target)`` (mean) over the pairs."""
    pred, target = box_pairs(args.pairs, device)
    pred.requires_grad_()

    def step() -> Tensor:
        pred.grad = None
        value = loss(pred, target)
        value.backward()
        return value.detach()

    return measure(step, device, args.warmup, args.repeats)


def compare_losses(args: argparse.Namespace, device: torch.device) -> List[Row]:
    """Our fused CDIoU / GIoU against the peers' DIoU / GIoU (float32 boxes)."""
    from mmpgnet.models.losses import CDIoULoss, GIoULoss
    peers, source = loss_peers()
    size = f'{args.pairs:,} pairs'
    return [
        Row(f'fused CDIoU vs DIoU ({source}): forward + backward', 'fp32', size,
            measure_loss(CDIoULoss(), args, device), measure_loss(peers['diou'], args, device)),
        Row(f'fused GIoU vs GIoU ({source}): forward + backward', 'fp32', size,
            measure_loss(GIoULoss(), args, device), measure_loss(peers['giou'], args, device)),
    ]


# --------------------------------------------------------------------------- report
def _mib(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:,.0f}'


def _ratio(ours: Optional[float], peer: Optional[float]) -> str:
    return 'n/a' if ours is None or peer is None or peer == 0 else f'{ours / peer:.2f}'


def format_table(rows: List[Row]) -> str:
    """The comparisons as a Markdown table (ours / peer ratios).

    Args:
        rows (list[Row]): the comparisons.

    Returns:
        str: the table.
    """
    header = ['comparison (ours vs peer)', 'precision', 'size', 'ours ms/step', 'peer ms/step',
              'time ours/peer', 'ours peak MiB', 'peer peak MiB', 'memory ours/peer',
              'last loss ours / peer', 'notes']
    cells = [[r.comparison, r.precision, r.size, f'{r.ours.ms:.2f}', f'{r.peer.ms:.2f}',
              f'{r.ours.ms / r.peer.ms:.2f}', _mib(r.ours.peak_mib), _mib(r.peer.peak_mib),
              _ratio(r.ours.peak_mib, r.peer.peak_mib), f'{r.ours.loss:.4g} / {r.peer.loss:.4g}',
              '; '.join(n for n in r.notes if n)] for r in rows]
    return analysis_utils.format_markdown_table(header, cells, align='lllrrrrrr')


def environment(device: torch.device, args: argparse.Namespace) -> str:
    """One paragraph naming the device, the versions and the method."""
    if device.type == 'cuda':
        name = f'{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})'
    else:
        name = f'CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)'
    missing = ', '.join(f'{p} ({r.split(":")[0]})' for p in ('mmdet', 'mmpose')
                        if (r := package_unavailable_reason(p)) is not None) or 'none'
    memory = ('peak memory: torch.cuda.max_memory_allocated over the timed steps'
              if device.type == 'cuda' else 'memory is not measured on the CPU')
    return (f'device: {name}; torch {torch.__version__}; Python {platform.python_version()}; '
            f'packages that do not import: {missing}.\n'
            f'Median of {args.repeats} timed steps after {args.warmup} warm-up steps, each '
            f'between two device synchronisations; {memory}.')


#: --only name -> (comparison, its name in skip messages, whether it needs mmpose), in report order
Comparison = Callable[[argparse.Namespace, torch.device], List[Row]]
COMPARISONS: Dict[str, Tuple[Comparison, str, bool]] = {
    'pose': (compare_pose, 'PGNet vs SimpleBaseline', True),
    'compile': (compare_compile, 'compiled vs eager PGNet', True),
    'norm': (compare_norms, 'CBN vs BN', False),
    'loss': (compare_losses, 'box losses', False),
}


def run(args: argparse.Namespace) -> str:
    """Measure every comparison that can run here and return the report.

    Args:
        args (argparse.Namespace): the options.

    Returns:
        str: the Markdown report (environment, table, skipped comparisons).
    """
    device = torch.device(args.device)
    rows: List[Row] = []
    skipped: List[str] = []
    for name, (compare, label, needs_mmpose) in COMPARISONS.items():
        if name not in args.only:
            continue
        reason = package_unavailable_reason('mmpose') if needs_mmpose else None
        if reason is None:
            rows += compare(args, device)
        else:
            skipped.append(f'skipped: {label}: mmpose not importable ({reason})')
    parts = ['# mmpgnet GPU report' if device.type == 'cuda' else '# mmpgnet report (CPU)',
             environment(device, args), format_table(rows)] + skipped
    return '\n\n'.join(parts) + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    """Print the report (and write ``--out``); 2 without CUDA unless ``--device cpu``.

    Args:
        argv (list[str], optional): command line.

    Returns:
        int: the exit status.
    """
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        print(NO_CUDA)
        return 2
    report = run(args)
    print(report, end='')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
