"""Parameters, FLOPs and CPU latency of CFFM against its baselines, in one table with ratios.

Three comparisons, each against its baseline (ratio = model / baseline):

(a) MMPose's SimpleBaseline R50 256x192 vs the PGNet pose model (R50 + CFFM + deconv/1x1 head);
(b) mmdet's FPN vs CFFM as necks alone, on the R50 feature shapes of an 800x1333 image;
(c) Faster R-CNN R50-FPN vs R50-CFFM on an 800x1344 (padded 800x1333) image.

FLOPs are MMEngine's ``get_model_complexity_info`` counts (fvcore convention: one multiply-add
counts as one FLOP, so "GFLOPs" here are G multiply-adds). Latency is the median wall time of
``--repeats`` forward passes under ``torch.inference_mode`` after warm-up, on this machine's CPU;
the models of a comparison run in turn, round by round, so that load from other processes
affects them alike.
Latency is measured in both memory formats by default (``--memory-format``): PyTorch's default
NCHW (``contiguous``) and NHWC (``channels_last``, what ``ChannelsLastHook`` or
``model.to(memory_format=torch.channels_last)`` gives), because the depthwise convs of CFFM and the
transposed convs of SimpleBaseline's head respond very differently to the layout on oneDNN.
Batch 32 runs for (a) only by default (``--batch32-all`` adds (b) and (c), which take minutes
and several GB at 800x1333); ``--skip-batch32`` drops it.

Compiled latency (``--compile``, by default for the necks of (b)): each model of a compiled
comparison is also wrapped in ``torch.compile`` (``--compile-backend``, inductor by default) and
timed at batch 1 in the same interleaved rounds as the eager models, after its first calls
(the compilation, whose wall time is reported in its own column; inductor's on-disk cache makes
a second run of the tool compile faster) and the warm-up. Ratios in a compiled column are
against the compiled baseline; the line under the table also gives compiled model / eager
baseline.

Example::

    python tools/analysis/neck_complexity.py --repeats 5 --out work_dirs/neck_complexity.md
    python tools/analysis/neck_complexity.py --only b --memory-format channels_last --repeats 9
"""
import argparse
import functools
import os
import os.path as osp
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.append(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # noqa: E402
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import analysis_utils  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmengine.analysis import get_model_complexity_info  # noqa: E402
from mmengine.config import Config  # noqa: E402

import mmpgnet  # noqa: E402,F401
from mmpgnet.utils.tensor_tree import map_tensors  # noqa: E402

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SIMPLEBASELINE = ('mmpose::body_2d_keypoint/topdown_heatmap/coco/'
                  'td-hm_res50_8xb64-210e_coco-256x192.py')
PGNET = osp.join(REPO_ROOT, 'configs/pgnet/pgnet_res50_cffm_8xb64-210e_coco-256x192.py')
FASTER_FPN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
FASTER_CFFM = osp.join(REPO_ROOT, 'configs/cffm/faster-rcnn_r50_cffm_1x_coco.py')
#: (channels, H, W) of ResNet-50 C2..C5 on an 800x1333 image
R50_FEATS_800x1333 = [(256, 200, 334), (512, 100, 167), (1024, 50, 84), (2048, 25, 42)]
DET_INPUT_HW = (800, 1344)  # 800x1333 padded to a multiple of 32 by DetDataPreprocessor
POSE_INPUT_HW = (256, 192)


@dataclass
class Entry:
    """One model to measure.

    Attributes:
        group (str): the comparison it belongs to; its first entry is the baseline.
        name (str): row label.
        build (Callable[[], nn.Module]): builds the module (eval mode, tensor-only forward).
        make_input (Callable[[int], tuple]): batch size -> forward arguments.
        batch32 (bool): whether batch 32 latency is measured.
        results (dict): filled by :func:`measure`.
    """

    group: str
    name: str
    build: Callable[[], nn.Module]
    make_input: Callable[[int], tuple]
    batch32: bool = True
    results: Dict[str, Optional[float]] = field(default_factory=dict)


class TensorForward(nn.Module):
    """Expose a model's tensor-mode forward as ``forward(inputs)`` for tracing and timing.

    Args:
        model (nn.Module): an MMPose estimator or MMDetection detector.
        data_samples (list, optional): fixed data samples, needed by two-stage detectors.
    """

    def __init__(self, model: nn.Module, data_samples: Optional[list] = None) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        """Run the model's ``_forward`` (no pre/post-processing)."""
        if self.data_samples is None:
            return self.model._forward(inputs)
        samples = self.data_samples
        if len(samples) != inputs.shape[0]:
            samples = samples[:1] * inputs.shape[0]
        return self.model._forward(inputs, samples)


def _load_model_cfg(config: str) -> Tuple[Config, str]:
    """Load a config's model, without pretrained weights; return it and its scope."""
    cfg = analysis_utils.load_config(config)
    model = cfg.model
    if model.get('backbone', {}).get('init_cfg') is not None:
        model.backbone.init_cfg = None
    return model, analysis_utils.config_scope(cfg, 'mmengine')


def build_model(config: str) -> nn.Module:
    """Build a config's model in eval mode.

    Args:
        config (str): config path or ``mmpose::`` / ``mmdet::`` name.

    Returns:
        nn.Module: the model.
    """
    model_cfg, scope = _load_model_cfg(config)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpose.registry import MODELS
    model = analysis_utils.build_in_scope(model_cfg, scope, MODELS)
    return model.eval()  # default initialisation: weights do not change FLOPs or latency


def build_pose(config: str) -> nn.Module:
    """A pose model wrapped for a tensor forward."""
    return TensorForward(build_model(config))


def build_detector(config: str) -> nn.Module:
    """A detector wrapped for a tensor forward with fixed image metas of ``DET_INPUT_HW``."""
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(
        img_shape=DET_INPUT_HW, ori_shape=DET_INPUT_HW, pad_shape=DET_INPUT_HW,
        batch_input_shape=DET_INPUT_HW, scale_factor=(1.0, 1.0)))
    return TensorForward(build_model(config), [sample])


def build_neck(config: str) -> nn.Module:
    """The neck of a detection config, alone."""
    model_cfg, scope = _load_model_cfg(config)
    from mmdet.registry import MODELS
    return analysis_utils.build_in_scope(model_cfg.neck, scope, MODELS).eval()


def image_input(hw: Tuple[int, int]) -> Callable[[int], tuple]:
    """Forward arguments: one random image batch of size ``hw``."""
    return lambda batch: (torch.rand(batch, 3, *hw), )


def feature_input(shapes: Sequence[Tuple[int, int, int]]) -> Callable[[int], tuple]:
    """Forward arguments: one tuple of random feature maps."""
    return lambda batch: (tuple(torch.rand(batch, *s) for s in shapes), )


MEMORY_FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


def to_memory_format(value, memory_format: torch.memory_format):
    """Convert 4-d tensors (also inside tuples and lists) to ``memory_format``."""
    return map_tensors(
        value, lambda t: t.contiguous(memory_format=memory_format) if t.dim() == 4 else t)


def median_latencies_ms(modules: Sequence[nn.Module], args_list: Sequence[tuple], repeats: int,
                        warmup: int) -> List[float]:
    """Median wall time of each ``modules[i](*args_list[i])`` in milliseconds.

    The modules run in turn (one run of each per round), so a slow phase of a shared machine
    hits all of them alike instead of biasing one.

    Args:
        modules (Sequence[nn.Module]): modules in eval mode.
        args_list (Sequence[tuple]): forward arguments of each module.
        repeats (int): timed rounds.
        warmup (int): untimed rounds first.

    Returns:
        list[float]: the median time of each module, in ms.
    """
    calls = [functools.partial(module, *args) for module, args in zip(modules, args_list)]
    with torch.inference_mode():
        timings = analysis_utils.time_round_robin(calls, repeats, warmup)
    return [timing.median_ms for timing in timings]


def compile_modules(modules: Sequence[nn.Module], args_list: Sequence[tuple],
                    backend: str) -> Tuple[List[Callable], List[float]]:
    """``torch.compile`` each module and run it twice on its arguments (compilation).

    Args:
        modules (Sequence[nn.Module]): modules in eval mode.
        args_list (Sequence[tuple]): forward arguments of each module.
        backend (str): ``torch.compile`` backend.

    Returns:
        tuple[list, list[float]]: the compiled callables and the wall time of each one's
        compilation (its first two calls) in seconds.
    """
    compiled, seconds = [], []
    with torch.inference_mode():
        for module, args in zip(modules, args_list):
            fn = torch.compile(module, backend=backend)
            start = time.perf_counter()
            for _ in range(2):  # the second call catches a recompilation on a guard, if any
                fn(*args)
            seconds.append(time.perf_counter() - start)
            compiled.append(fn)
    return compiled, seconds


def measure_group(entries: Sequence[Entry], args: argparse.Namespace) -> None:
    """Fill ``results`` of a comparison's entries: params (M), GFLOPs, latencies (ms).

    With compilation for the group (``args.compile``), ``lat1c_<fmt>`` (compiled latency, ms)
    and ``compile_<fmt>`` (compilation time, s) too, measured in the rounds of the eager ones.
    """
    modules = [entry.build() for entry in entries]
    for entry, module in zip(entries, modules):
        info = get_model_complexity_info(
            module, inputs=entry.make_input(1), show_table=False, show_arch=False)
        entry.results['params'] = info['params'] / 1e6
        entry.results['flops'] = info['flops'] / 1e9
    run32 = not args.skip_batch32 and all(e.batch32 or args.batch32_all for e in entries)
    run_compiled = entries[0].group[1] in args.compile
    for fmt in args.formats:
        memory_format = MEMORY_FORMATS[fmt]
        modules = [module.to(memory_format=memory_format) for module in modules]
        inputs = [[to_memory_format(e.make_input(batch), memory_format) for e in entries]
                  for batch in (1, 32)]
        timed, timed_inputs = list(modules), list(inputs[0])
        if run_compiled:
            torch.compiler.reset()
            compiled, seconds = compile_modules(modules, inputs[0], args.compile_backend)
            timed, timed_inputs = timed + compiled, timed_inputs + inputs[0]
        lat1 = median_latencies_ms(timed, timed_inputs, args.repeats, args.warmup)
        lat32 = (median_latencies_ms(modules, inputs[1], args.repeats32, 1)
                 if run32 else [None] * len(entries))
        for i, (entry, l1, l32) in enumerate(zip(entries, lat1, lat32)):
            entry.results.update({f'lat1_{fmt}': l1, f'lat32_{fmt}': l32})
            if run_compiled:
                entry.results.update({f'lat1c_{fmt}': lat1[len(entries) + i],
                                      f'compile_{fmt}': seconds[i]})
    for entry in entries:
        print(f'  measured {entry.group} / {entry.name}: {entry.results}', flush=True)


def make_entries() -> List[Entry]:
    """The six models of the three comparisons; the first of each group is its baseline."""
    pose_in = image_input(POSE_INPUT_HW)
    return [
        Entry('(a) pose 256x192', 'SimpleBaseline R50', lambda: build_pose(SIMPLEBASELINE),
              pose_in),
        Entry('(a) pose 256x192', 'PGNet R50-CFFM', lambda: build_pose(PGNET), pose_in),
        Entry('(b) neck, R50 feats of 800x1333', 'FPN', lambda: build_neck(FASTER_FPN),
              feature_input(R50_FEATS_800x1333), batch32=False),
        Entry('(b) neck, R50 feats of 800x1333', 'CFFM', lambda: build_neck(FASTER_CFFM),
              feature_input(R50_FEATS_800x1333), batch32=False),
        Entry('(c) Faster R-CNN 800x1344', 'R50-FPN', lambda: build_detector(FASTER_FPN),
              image_input(DET_INPUT_HW), batch32=False),
        Entry('(c) Faster R-CNN 800x1344', 'R50-CFFM', lambda: build_detector(FASTER_CFFM),
              image_input(DET_INPUT_HW), batch32=False),
    ]


def _cell(value: Optional[float], base: Optional[float], fmt: str) -> str:
    """``value (ratio x)`` or ``n/a``."""
    if value is None:
        return 'n/a'
    text = format(value, fmt)
    if base is not None and base > 0:
        text += f' ({value / base:.2f}x)'
    return text


def _latency_columns(entries: List[Entry],
                     args: argparse.Namespace) -> List[Tuple[str, str, str, bool]]:
    """``(results key, title, number format, is a ratio-bearing column)`` of the table."""
    short = dict(contiguous='NCHW', channels_last='NHWC')
    compiled = any(f'lat1c_{fmt}' in e.results for e in entries for fmt in args.formats)
    columns = []
    for fmt in args.formats:
        columns += [(f'lat{b}_{fmt}', f'CPU b{b} {short[fmt]} (ms)', '.1f' if b == 1 else '.0f',
                     True) for b in (1, 32)]
        if compiled:
            columns += [(f'lat1c_{fmt}', f'compiled b1 {short[fmt]} (ms)', '.1f', True),
                        (f'compile_{fmt}', f'compile {short[fmt]} (s)', '.0f', False)]
    return columns


def _compiled_vs_eager_notes(entries: List[Entry], args: argparse.Namespace) -> List[str]:
    """One sentence per compiled model: its compiled latency / its baseline's eager one."""
    notes, baselines = [], {}
    for entry in entries:
        base = baselines.setdefault(entry.group, entry)
        for fmt in args.formats:
            compiled, eager = entry.results.get(f'lat1c_{fmt}'), base.results.get(f'lat1_{fmt}')
            if entry is not base and compiled is not None and eager:
                notes.append(f'{entry.name} compiled / {base.name} eager ({fmt}): '
                             f'{compiled / eager:.2f}x.')
    return notes


def format_table(entries: List[Entry], args: argparse.Namespace) -> str:
    """Markdown table; ratios are against the first entry of each group."""
    latency_cols = _latency_columns(entries, args)
    header = ['comparison', 'model', 'params (M)', 'GFLOPs (G mult-adds)'
              ] + [title for _, title, _, _ in latency_cols]
    rows = []
    baselines: Dict[str, Entry] = {}
    for entry in entries:
        base = baselines.setdefault(entry.group, entry)
        r, b = entry.results, base.results
        cells = [entry.group, entry.name, _cell(r['params'], b['params'], '.2f'),
                 _cell(r['flops'], b['flops'], '.2f')]
        cells += [_cell(r.get(key), b.get(key) if ratio else None, fmt)
                  for key, _, fmt, ratio in latency_cols]
        rows.append(cells)
    lines = [analysis_utils.format_markdown_table(header, rows)]
    compiled = any(key.startswith('lat1c_') for key, _, _, _ in latency_cols)
    lines.append('')
    lines.append(
        f'Ratios (in parentheses) are against the first row of each comparison'
        f'{" (compiled latency: against the compiled first row)" if compiled else ""}. '
        f'Latency: median of {args.repeats} runs at batch 1 and {args.repeats32} at batch 32 '
        f'(models of a comparison interleaved{", eager and compiled" if compiled else ""}), '
        f'after {args.warmup} warm-up run(s); '
        + (f'compiled with torch.compile(backend={args.compile_backend!r}) for comparison(s) '
           f'{", ".join(args.compile)}; ' if compiled else '')
        + f'{torch.get_num_threads()} torch threads, '
        f'{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, '
        f'torch {torch.__version__}.')
    lines += _compiled_vs_eager_notes(entries, args)
    return '\n'.join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=10, help='timed runs at batch 1')
    parser.add_argument('--repeats32', type=int, default=3, help='timed runs at batch 32')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first (batch 1)')
    parser.add_argument('--skip-batch32', action='store_true', help='no batch-32 latency')
    parser.add_argument('--batch32-all', action='store_true',
                        help='batch-32 latency for the 800x1333 comparisons too (slow)')
    parser.add_argument('--only', nargs='+', choices=['a', 'b', 'c'],
                        help='run only these comparisons')
    parser.add_argument('--memory-format', choices=['both', *MEMORY_FORMATS], default='both',
                        help='memory format(s) of the latency runs (default: both)')
    parser.add_argument('--compile', nargs='*', choices=['a', 'b', 'c'], default=['b'],
                        help='comparisons whose models are also timed under torch.compile '
                        '(default: b, the necks; none without values); compiling the full '
                        'models of a and c takes minutes')
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend (default: inductor)')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads')
    parser.add_argument('--out', help='also write the table to this file')
    args = parser.parse_args(argv)
    args.formats = list(MEMORY_FORMATS) if args.memory_format == 'both' else [args.memory_format]
    return args


def main(argv: Optional[List[str]] = None) -> str:
    """Measure every entry and print (and optionally save) the table.

    Returns:
        str: the markdown table.
    """
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = make_entries()
    if args.only:
        entries = [e for e in entries if e.group[1] in args.only]
    groups: Dict[str, List[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    for group in groups.values():
        measure_group(group, args)
    table = format_table(entries, args)
    print(table)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    return table


if __name__ == '__main__':
    main()
