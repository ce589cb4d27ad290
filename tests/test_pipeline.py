"""Pipeline parallelism: PipelineParallelWrapper, PipelineParallelRunner and their timing hook.

The single-process reference of a pipeline step is the *same micro-batched computation*: the
plain model's ``loss()`` on each micro-batch in turn, gradients accumulated, then divided by M.
Micro-batching changes BatchNorm's batch statistics, so a full-batch step would not be a fair
reference; with the same micro-batches the pipeline must match it to float precision.
"""
import glob
import json
import multiprocessing
import os
import os.path as osp
import signal
import socket
import time
import traceback
from dataclasses import asdict

import pytest
import torch
import torch.distributed as dist
from helpers.configs import smoke_config
from helpers.distributed import free_port, init_gloo, spawn_and_wait
from helpers.tool_runs import REPO_ROOT, run_tool
from helpers.torch_features import needs_pipelining
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from test_pgs_guidance import build_tiny, tiny_batch

from mmpgnet.engine.model_wrappers import PipelineParallelWrapper
from mmpgnet.engine.model_wrappers.pipeline_parallel_wrapper import total_loss
from mmpgnet.engine.pipeline import (balance, check_layout, cut_aliases, live_keys, profile_blocks,
                                     resolve_split_points, sent_keys)
from mmpgnet.engine.runner import PipelineParallelRunner
from mmpgnet.utils.peer_watch import lost_peer_message, start_peer_watch

PIPE_CFG = osp.join(REPO_ROOT, 'configs', 'pgnet',
                    'pgnet_res50_cffm_guidance_pipeline-2stage_8xb64-210e_coco-256x192.py')
STEPS, MICRO, BATCH, LR = 3, 4, 8, 0.05
#: process-group timeout of the lost-rank tests
DEAD_PEER_TIMEOUT_S = 10


def _sgd(params, lr=None) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr or LR, momentum=0.9, weight_decay=1e-4)


def reference_steps(model, data, steps=STEPS, micro=MICRO):
    """The plain model on the same micro-batches with gradient accumulation (1 thread)."""
    opt = _sgd(model.parameters())
    losses = []
    for _ in range(steps):
        d = model.data_preprocessor(data, True)
        size = len(d['data_samples']) // micro
        total = 0.0
        for i in range(micro):
            parts = model.loss(d['inputs'][i * size:(i + 1) * size],
                               d['data_samples'][i * size:(i + 1) * size])
            loss = sum(v for k, v in parts.items() if 'loss' in k)
            loss.backward()
            total += loss.item() / micro
        for p in model.parameters():
            if p.grad is not None:
                p.grad /= micro  # as torch's schedules scale gradients after accumulating
        opt.step()
        opt.zero_grad()
        losses.append(total)
    return losses


def _assert_same_params(state_a, state_b, atol=1e-5):
    assert state_a.keys() == state_b.keys()
    for k, v in state_b.items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(state_a[k], v, atol=atol, rtol=0, msg=k)


# ---------------------------------------------------------------------------------- one process
@needs_pipelining
def test_blocks_cover_the_model_and_carry_what_later_stages_read():
    model = build_tiny()
    wrapper = PipelineParallelWrapper(model, num_stages=2, split_points=['backbone.layer3.0'])
    graph = wrapper.graph
    assert graph.names[0] == 'backbone.stem' and graph.names[-1] == 'head'
    assert graph.names.index('guidance') == graph.names.index('neck.cascade0') + 1
    # at the cut: the residual stream, C2 and C3 for the neck, and the targets
    assert set(live_keys(graph, graph.index('backbone.layer3.0'))) == \
        {'x', 'c0', 'c1', 'gt_heatmaps', 'keypoint_weights'}
    # C3 is the residual stream itself: it crosses once and is restored as an alias
    cut = graph.index('backbone.layer3.0')
    assert cut_aliases(graph, cut) == {'c1': 'x'}
    assert set(sent_keys(graph, cut)) == {'x', 'c0', 'gt_heatmaps', 'keypoint_weights'}
    # after the guidance block its predictions travel to the loss
    assert {'guide1', 'guide2', 'guide3'} <= set(live_keys(graph, graph.index('neck.cascade1')))
    owned = [id(p) for stage in wrapper.stage_modules for p in stage.parameters()]
    assert len(owned) == len(set(owned))  # no parameter in two stages
    assert set(owned) == {id(p) for p in model.parameters()}  # every parameter in one


@needs_pipelining
def test_local_pipeline_equals_gradient_accumulation():
    torch.set_num_threads(1)
    data = tiny_batch(BATCH)
    model = build_tiny()
    reference = build_tiny()
    wrapper = PipelineParallelWrapper(model, num_stages=2, num_microbatches=MICRO,
                                      split_points=['neck.cascade0'])
    optim = OptimWrapper(_sgd(model.parameters()))
    losses = [float(wrapper.train_step(data, optim)['loss']) for _ in range(STEPS)]
    ref_losses = reference_steps(reference, data)
    assert losses == pytest.approx(ref_losses, abs=1e-5)
    _assert_same_params(model.state_dict(), reference.state_dict())
    assert wrapper.last_stats.local and wrapper.last_stats.bubble == 0.0


@needs_pipelining
def test_auto_split_balances_measured_time_and_reports_cut_sizes():
    model = build_tiny()
    wrapper = PipelineParallelWrapper(model, num_stages=2, num_microbatches=2,
                                      split_points='auto', profile_iters=1)
    wrapper.train_step(tiny_batch(4), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0)))
    report = wrapper.report
    ms = report.block_ms
    assert len(ms) == len(wrapper.graph.blocks) and report.cuts == wrapper.cuts
    cut = report.cuts[0]
    assert report.stage_ms() == pytest.approx([sum(ms[:cut]), sum(ms[cut:])])
    # balance()'s contract on the measured times (exact arithmetic, no timing noise): the
    # bottleneck is within its 1 % slack of the best single cut, and among the cuts within that
    # slack it crosses the fewest bytes
    bottleneck = {c: max(sum(ms[:c]), sum(ms[c:])) for c in range(1, len(ms))}
    slack = 0.01 * min(bottleneck.values())
    near = [c for c, b in bottleneck.items() if b - min(bottleneck.values()) <= slack]
    assert cut in near
    assert report.cut_bytes[cut] == min(report.cut_bytes[c] for c in near)
    assert report.cut_bytes[cut] > 0 and 'KiB/micro-batch' in report.summary()
    assert balance([1, 1, 1, 1, 4], 2) == [4]
    assert balance([3, 1, 1, 1], 2) == [1]
    # within 1 % of the best bottleneck the cut that sends fewer bytes wins ...
    assert balance([2.0, 0.03, 1.99], 2, tie_break=[0, 10, 1, 0]) == [2]
    assert balance([2.0, 0.03, 1.99], 2, tie_break=[0, 1, 10, 0]) == [1]
    # ... beyond it the faster one does, whatever it sends
    assert balance([2.0, 0.5, 1.9], 2, tie_break=[0, 10, 1, 0]) == [1]
    assert balance([1, 2, 3, 4, 5, 6], 3) == [3, 5]


@needs_pipelining
def test_profiling_restores_buffers_and_gradients():
    model = build_tiny()
    wrapper = PipelineParallelWrapper(model, num_stages=2, split_points=['neck.lateral'])
    inputs = wrapper.adapter.pack(model.data_preprocessor(tiny_batch(2), True))
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    profile_blocks(wrapper.graph, inputs, lambda state: total_loss(wrapper.adapter.losses(state)),
                   iters=1, warmup=0)
    assert all(torch.equal(buffers[k], v) for k, v in model.named_buffers())
    assert all(p.grad is None for p in model.parameters())


@needs_pipelining
def test_bad_configurations_fail_before_training_and_say_what_to_change(tmp_path):
    model = build_tiny()
    with pytest.raises(ValueError, match="split point 'backbone.layer9.0' is not a block.*one of"):
        PipelineParallelWrapper(model, num_stages=2, split_points=['backbone.layer9.0'])
    with pytest.raises(ValueError, match='num_stages=3 needs 2 split point'):
        PipelineParallelWrapper(model, num_stages=3, split_points=['head'])
    with pytest.raises(ValueError, match='must be in model order'):
        PipelineParallelWrapper(model, num_stages=3, split_points=['head', 'neck.lateral'])
    with pytest.raises(ValueError, match='schedule must be one of'):
        PipelineParallelWrapper(model, schedule='Interleaved')
    with pytest.raises(ValueError, match='only 2 processes: launch 4'):
        check_layout(4, 2)
    with pytest.raises(ValueError, match='launch a multiple of 2 processes'):
        check_layout(2, 3)
    graph = PipelineParallelWrapper(model, num_stages=2, split_points=['head']).graph
    assert resolve_split_points(graph, 2, ['head']) == [len(graph.blocks) - 1]
    wrapper = PipelineParallelWrapper(model, num_stages=2, num_microbatches=4,
                                      split_points=['head'])
    with pytest.raises(ValueError, match='batch of 6 samples cannot be split into '
                       'num_microbatches=4.*batch_size a multiple'):
        wrapper.train_step(tiny_batch(6), OptimWrapper(torch.optim.SGD(model.parameters(), 0.1)))
    with pytest.raises(ValueError, match='batch of 6 samples cannot be split into '
                       'num_microbatches=4'):  # the same check, before anything is built
        PipelineParallelRunner(model=dict(type='Whatever'), work_dir=str(tmp_path),
                               train_dataloader=dict(batch_size=6),
                               cfg=dict(model_wrapper_cfg=dict(type='PipelineParallelWrapper',
                                                               num_microbatches=4)))


# ---------------------------------------------------------------------------------- processes
def _equivalence_worker(rank: int, port: int, out_dir: str) -> None:
    init_gloo(rank, 2, port)
    try:
        model = build_tiny()
        with pytest.raises(ValueError, match='only 2 processes: launch 3'):
            PipelineParallelWrapper(model, num_stages=3)
        for schedule in ('GPipe', '1F1B'):
            model = build_tiny()
            wrapper = PipelineParallelWrapper(model, num_stages=2, num_microbatches=MICRO,
                                              schedule=schedule,
                                              split_points=['backbone.layer3.0'])
            optim = OptimWrapper(_sgd(model.parameters()))
            data = tiny_batch(BATCH)
            losses = [float(wrapper.train_step(data, optim)['loss']) for _ in range(STEPS)]
            stats = wrapper.last_stats
            wrapper.sync_stages()
            state = dict(state=wrapper.gather_optimizer_state(optim.optimizer))
            if rank == 0:
                torch.save(dict(losses=losses, state=model.state_dict(), stats=asdict(stats),
                                optim=state),
                           osp.join(out_dir, f'{schedule}.pth'))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_pipeline_equals_single_process(tmp_path):
    spawn_and_wait(_equivalence_worker, (free_port(), str(tmp_path)), 2, timeout=150)
    torch.set_num_threads(1)
    ref_model = build_tiny()
    ref_losses = reference_steps(ref_model, tiny_batch(BATCH))
    for schedule in ('GPipe', '1F1B'):
        out = torch.load(osp.join(tmp_path, f'{schedule}.pth'))
        assert out['losses'] == pytest.approx(ref_losses, abs=1e-5), schedule
        _assert_same_params(out['state'], ref_model.state_dict())
        stats = out['stats']
        assert not stats['local'] and len(stats['stage_compute_s']) == 2
        assert stats['bubble_ideal'] == pytest.approx(1 / 5)
        assert all(0 <= b <= 1 for b in stats['stage_bubble'])
        # every trainable parameter has momentum, gathered from the stage that owns it
        n_params = sum(1 for p in ref_model.parameters() if p.requires_grad)
        assert len(out['optim']['state']) == n_params


def _fault(how: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL if how == 'kill' else signal.SIGSTOP)


def _dying_worker(rank: int, world: int, port: int, out_dir: str, how: str) -> None:
    """Train 4 pipeline steps; rank 1 is killed (or stops answering) inside stage 1 of step 2."""
    init_gloo(rank, world, port, timeout_s=DEAD_PEER_TIMEOUT_S)
    start_peer_watch(interval_s=0.5)
    with open(osp.join(out_dir, f'rank{rank}.pid'), 'w') as f:
        f.write(str(os.getpid()))
    model = build_tiny()
    wrapper = PipelineParallelWrapper(model, num_stages=2, num_microbatches=2,
                                      split_points=['neck.lateral'])
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    faulty_step = dict(now=-1)
    if rank == 1:  # the head runs in stage 1: the fault hits after its input arrived
        model.head.final_layer.register_forward_hook(
            lambda *args: _fault(how) if faulty_step['now'] == 2 else None)
    start = time.time()
    try:
        for step in range(4):
            faulty_step['now'] = step
            if step == 2:
                start = time.time()
            wrapper.train_step(tiny_batch(4), optim)
        result = 'finished'
    except Exception as error:  # noqa: BLE001 (what a tool's run_cli does)
        result = lost_peer_message(error) or traceback.format_exc()
    with open(osp.join(out_dir, f'rank{rank}.txt'), 'w') as f:
        f.write(f'{time.time() - start:.1f}\n{result}')
    os._exit(1 if result != 'finished' else 0)


@pytest.mark.slow
@pytest.mark.parametrize('how', ['kill', 'hang'])
def test_a_rank_lost_mid_step_ends_the_job_with_its_name_not_a_hang(tmp_path, how):
    """SIGKILL: the peer sees the connection close at once; SIGSTOP: the process-group timeout
    bounds the wait. Either way rank 0 exits non-zero naming rank 1 and its pid."""
    ctx = multiprocessing.get_context('spawn')
    port = free_port()
    procs = [ctx.Process(target=_dying_worker, args=(r, 2, port, str(tmp_path), how))
             for r in range(2)]
    for p in procs:
        p.start()
    procs[0].join(timeout=120)
    alive = procs[0].is_alive()
    for p in procs:
        if p.is_alive():
            p.kill()  # the stopped rank of the 'hang' case (torchrun would end it)
            p.join()
    assert not alive, 'rank 0 still waits for a lost peer after 120 s'
    assert procs[0].exitcode == 1
    assert procs[1].exitcode == -signal.SIGKILL  # killed by the fault, or by the test
    seconds, report = open(tmp_path / 'rank0.txt').read().split('\n', 1)
    pid = open(tmp_path / 'rank1.pid').read()
    assert f'lost a process: rank 1 (pid {pid} on {socket.gethostname()}) stopped without ' \
        'an error report' in report, report
    assert "This rank's error: RuntimeError: pipeline stage 0 (rank 0) failed" in report
    if how == 'kill':  # the closed connection is seen at once; the census takes 1.25 s
        assert float(seconds) < DEAD_PEER_TIMEOUT_S
    else:  # a peer that stops answering is given up after the process-group timeout
        assert DEAD_PEER_TIMEOUT_S <= float(seconds) < DEAD_PEER_TIMEOUT_S + 15
        assert 'timed out' in report.lower() or 'timeout' in report.lower()


@pytest.mark.slow
def test_dist_train_pipeline_config_then_test_on_one_process(synthetic_coco, tmp_path):
    work_dir = str(tmp_path / 'pipe')
    cfg = smoke_config(
        PIPE_CFG, synthetic_coco, work_dir, max_epochs=1, batch_size=4,
        extra=dict(model=dict(backbone=dict(depth=18),
                              neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
                              head=dict(in_channels=32, deconv_out_channels=(32, )),
                              # the config has no feedback; the pipeline must carry it too
                              guidance_cfg=dict(feedback_weight=0.25)),
                   model_wrapper_cfg=dict(num_microbatches=2, profile_iters=1)))
    # after one epoch AP is 0.0 either way; the end-point error in pixels tells models apart
    dumped = Config.fromfile(cfg)
    for key in ('val_evaluator', 'test_evaluator'):
        dumped[key] = [dumped[key], dict(type='EPE')]
    dumped.dump(cfg)
    out = run_tool(['dist_train.sh', cfg, '2'], timeout=400)
    assert "split_points='auto'" in out and 'stage 1:' in out
    ckpt_path = osp.join(work_dir, 'epoch_1.pth')
    ckpt = torch.load(ckpt_path)
    assert not any(k.startswith(('module.', 'stage')) for k in ckpt['state_dict'])
    assert any(k.startswith('guidance.') for k in ckpt['state_dict'])
    n_trainable = sum(1 for k in ckpt['state_dict']
                      if k.endswith(('weight', 'bias')) and 'running' not in k)
    assert len(ckpt['optimizer']['state']) == n_trainable  # both stages' momentum
    scalars = [json.loads(line) for f in glob.glob(osp.join(work_dir, '*', 'vis_data',
                                                            'scalars.json'))
               for line in open(f) if line.strip()]
    train = [r for r in scalars if 'loss' in r]
    assert train and all(torch.isfinite(torch.tensor(r['loss'])) for r in train)
    for key in ('pipe_bubble', 'pipe_bubble_ideal', 'pipe_s0_compute', 'pipe_s1_wait',
                'guidance_scale', 'loss_guide_l1', 'loss_fb_l3'):
        assert key in train[-1], key
    assert train[-1]['pipe_bubble_ideal'] == pytest.approx(1 / 3)
    out_json = str(tmp_path / 'metrics.json')
    run_tool(['test.py', cfg, ckpt_path, '--work-dir', str(tmp_path / 'test'), '--out',
              out_json], env=dict(OMP_NUM_THREADS='1'))  # one thread per rank, as dist_train
    # the pipelined run's own validation (2 processes, the model in stages) and tools/test.py on
    # one process with the merged checkpoint score the same model on the same images (AP is
    # 0.0 after one epoch either way: the end-point error compares them)
    val = [r for r in scalars if 'EPE' in r]
    assert len(val) == 1, val
    test_metrics = json.load(open(out_json))
    # equal to every printed digit when measured (78.44 px); the bound leaves room for a
    # rounding-level difference to move a key point of a flat heatmap, not for another model
    assert test_metrics['EPE'] > 0
    assert test_metrics['EPE'] == pytest.approx(val[0]['EPE'], rel=1e-3)
