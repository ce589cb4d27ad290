"""Benchmark the PGS pipeline: one process vs a 2-stage pipeline on 2 processes (gloo, CPU).

For every number of micro-batches M it measures the time of one training step (forward,
backward and optimizer step of a whole batch) of

* T1: one process, one thread, running the *same* M micro-batches one after the other through
  the whole model (:class:`PipelineParallelWrapper` in local mode = gradient accumulation);
* T2: the S=2 stage pipeline on 2 processes with one thread each (torch.distributed.pipelining,
  GPipe or 1F1B, gloo), cut by ``split_points='auto'`` (measured per-block time).

Definitions (reported per M):

* speed-up ``T1 / T2``;
* ideal speed-up of an S-stage pipeline with equal stages and free communication:
  ``S * M / (M + S - 1)`` (each stage idles ``(S - 1)`` slots out of ``M + S - 1``);
* **efficiency** = measured speed-up / ideal speed-up = ``(T1 / T2) / S / (M / (M + S - 1))``:
  1.0 means the pipeline loses nothing beyond its unavoidable fill/drain bubble; imbalance
  between stages, communication and framework overhead push it below 1;
* measured bubble: per stage, ``1 - compute / step`` where compute is the time inside the
  stage's forward/backward chunks and loss (:class:`TimedPipelineStage`), averaged over
  stages, beside the ideal ``(S - 1) / (M + S - 1)``.

The baseline runs the same micro-batches, so the efficiency isolates the pipeline's cost;
the table also gives ``T1(M=1)`` (whole batch at once) for the absolute picture.

Example::

    python tools/analysis/benchmark_pipeline.py --micro-batches 1 2 4 8 --out bench.json
"""
import argparse
import json
import os
import os.path as osp
import socket
import statistics
import sys
import time
from datetime import timedelta
from typing import Dict, List

sys.path.append(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # noqa: E402
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import analysis_utils  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

NUM_STAGES = 2


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark the 2-stage pipeline on CPU')
    parser.add_argument('--micro-batches', type=int, nargs='+', default=[1, 2, 4, 8])
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--input-size', type=int, nargs=2, default=[128, 96],
                        help='input height and width')
    parser.add_argument('--depth', type=int, default=18, help='ResNet depth')
    parser.add_argument('--schedule', default='GPipe', choices=['GPipe', '1F1B'])
    parser.add_argument('--iters', type=int, default=6, help='timed steps per setting')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per setting')
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """A ResNet + heatmap-head top-down pose model (blocks of similar cost: stages balance)."""
    from mmengine.registry import DefaultScope
    from mmpose.registry import MODELS

    import mmpgnet  # noqa: F401
    DefaultScope.get_instance(f'bench-{os.getpid()}-{time.time()}', scope_name='mmpose')
    height, width = args.input_size
    channels = 512 if args.depth < 50 else 2048
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='TopdownPoseEstimator',
        data_preprocessor=dict(type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        backbone=dict(type='ResNet', depth=args.depth),
        head=dict(type='HeatmapHead', in_channels=channels, out_channels=17,
                  deconv_out_channels=(128, 128), deconv_kernel_sizes=(4, 4),
                  loss=dict(type='KeypointMSELoss', use_target_weight=True),
                  decoder=dict(type='MSRAHeatmap', input_size=(width, height),
                               heatmap_size=(width // 8, height // 8), sigma=2)),
        train_cfg=dict(compute_acc=False), test_cfg=dict(flip_test=False)))
    return model.train()


def make_batch(args: argparse.Namespace) -> dict:
    from mmpose.testing import get_packed_inputs
    height, width = args.input_size
    return get_packed_inputs(args.batch_size, img_shape=(height, width),
                             input_size=(width, height), heatmap_size=(width // 8, height // 8),
                             with_simcc_label=False, with_reg_label=False)


def time_steps(args: argparse.Namespace, micro: int) -> Dict[str, float]:
    """Median step time (and bubble) of the wrapper in this process's mode (local or stage)."""
    from mmengine.optim import OptimWrapper

    from mmpgnet.engine.model_wrappers import PipelineParallelWrapper
    model = build_model(args)
    wrapper = PipelineParallelWrapper(model, num_stages=NUM_STAGES, num_microbatches=micro,
                                      schedule=args.schedule, split_points='auto')
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    data = make_batch(args)
    bubbles = []
    timing = analysis_utils.time_calls(
        lambda: wrapper.train_step(data, optim), args.iters, args.warmup,
        before=dist.barrier if dist.is_initialized() else None,
        each=lambda _: bubbles.append(wrapper.last_stats.bubble))
    stage_ms = wrapper.report.stage_ms() if wrapper.report else []
    return dict(step_s=timing.median_s, bubble=statistics.mean(bubbles),
                stage_ms=stage_ms, split=wrapper.stage_modules[1].block_names[0])


def _single(args: argparse.Namespace, queue) -> None:
    torch.set_num_threads(1)
    queue.put({m: time_steps(args, m) for m in args.micro_batches})


def _stage(rank: int, args: argparse.Namespace, port: int, queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=NUM_STAGES,
                            timeout=timedelta(seconds=300))
    results = {}
    for m in args.micro_batches:
        res = time_steps(args, m)
        step = torch.tensor([res['step_s']])
        dist.all_reduce(step, op=dist.ReduceOp.MAX)  # a step ends when the slowest stage ends
        res['step_s'] = step.item()
        results[m] = res
    if rank == 0:
        queue.put(results)
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace) -> List[dict]:
    """Run both measurements (one after the other, not concurrently) and build the table rows."""
    ctx = mp.get_context('spawn')
    queue = ctx.SimpleQueue()
    proc = ctx.Process(target=_single, args=(args, queue))
    proc.start()
    single = queue.get()
    proc.join()
    mp.start_processes(_stage, args=(args, _free_port(), queue), nprocs=NUM_STAGES,
                       start_method='spawn', join=True)
    pipe = queue.get()
    rows = []
    for m in args.micro_batches:
        t1, t2 = single[m]['step_s'], pipe[m]['step_s']
        ideal_bubble = (NUM_STAGES - 1) / (m + NUM_STAGES - 1)
        speedup = t1 / t2
        rows.append(dict(
            M=m, t1_s=t1, t2_s=t2, t1_full_batch_s=single[min(args.micro_batches)]['step_s'],
            throughput_1=args.batch_size / t1, throughput_2=args.batch_size / t2,
            speedup=speedup, ideal_speedup=NUM_STAGES * (1 - ideal_bubble),
            efficiency=speedup / NUM_STAGES / (1 - ideal_bubble),
            bubble=pipe[m]['bubble'], ideal_bubble=ideal_bubble, split=pipe[m]['split'],
            stage_ms=pipe[m]['stage_ms']))
    return rows


def format_table(rows: List[dict], args: argparse.Namespace) -> str:
    """The results as one Markdown table."""
    head = (f'ResNet-{args.depth} pose, batch {args.batch_size}, input {args.input_size[0]}x'
            f'{args.input_size[1]}, {args.schedule}, S=2, 1 thread per process\n\n')
    header = ['M', '1 proc s/batch', '2-stage s/batch', 'img/s 1 proc', 'img/s 2-stage',
              'speed-up', 'ideal speed-up', 'efficiency', 'bubble measured', 'bubble ideal',
              'cut before']
    cells = [[r['M'], f"{r['t1_s']:.3f}", f"{r['t2_s']:.3f}", f"{r['throughput_1']:.1f}",
              f"{r['throughput_2']:.1f}", f"{r['speedup']:.2f}", f"{r['ideal_speedup']:.2f}",
              f"{r['efficiency']:.2f}", f"{r['bubble']:.3f}", f"{r['ideal_bubble']:.3f}",
              r['split']] for r in rows]
    return head + analysis_utils.format_markdown_table(header, cells) + '\n'


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    if args.batch_size % max(args.micro_batches):
        raise ValueError(f'--batch-size {args.batch_size} must be a multiple of every M')
    rows = run(args)
    print(format_table(rows, args))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=2)
    return rows


if __name__ == '__main__':
    main()
