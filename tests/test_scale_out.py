"""More than one machine, and machines that fail: data x pipeline parallel on 4 processes, a
two-node launch of tools/dist_train.sh, a rank killed in the middle of a DDP step on the other
node, and checkpoints that are broken, foreign, or cut short by a kill while saving."""
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List

import pytest
import torch
import torch.distributed as dist
from helpers.configs import smoke_config
from helpers.distributed import free_port, init_gloo, spawn_and_wait
from helpers.pose_models import build_tiny, tiny_batch, tiny_pose_cfg
from helpers.scale_out import DEMO, IMPORT_PROBES, SMALL_DEMO, TESTS
from helpers.tool_runs import REPO_ROOT
from helpers.torch_features import needs_pipelining
from mmengine.config import Config

from mmpgnet.engine.runner import PipelineParallelRunner

# ------------------------------------------------------------------ data x pipeline parallel
SAMPLES, BATCH, ITERS, LR = 16, 4, 3, 0.05
WRAPPER = dict(type='PipelineParallelWrapper', num_stages=2, num_microbatches=2,
               split_points=['backbone.layer3.0'])


def _dp_pp_worker(rank: int, port: int, out_dir: str, data_path: str) -> None:
    init_gloo(rank, 4, port)
    try:
        import helpers.scale_out  # noqa: F401  (PackedSamples, RecordRunHook)
        runner = PipelineParallelRunner(
            model=tiny_pose_cfg(), work_dir=out_dir, default_scope='mmpose',
            train_dataloader=dict(
                batch_size=BATCH, num_workers=0, collate_fn=dict(type='pseudo_collate'),
                sampler=dict(type='DefaultSampler', shuffle=True),
                dataset=dict(type='PackedSamples', path=data_path)),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=LR, momentum=0.9,
                                              weight_decay=1e-4)),
            train_cfg=dict(type='IterBasedTrainLoop', max_iters=ITERS),
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                               interval=ITERS)),
            custom_hooks=[dict(type='RecordRunHook', out_dir=out_dir)],
            launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='gloo')),
            randomness=dict(seed=0), cfg=dict(model_wrapper_cfg=WRAPPER))
        runner.train()
    finally:
        dist.destroy_process_group()


def _reference_params(initial: dict, data: dict,
                      batches: List[List[int]]) -> Dict[str, torch.Tensor]:
    """One process, the same batches: each step accumulates the micro-batches of both replicas
    (2 per replica, in replica order) and divides by their number, as averaging the replicas'
    pipeline gradients does."""
    torch.set_num_threads(1)
    model = build_tiny()
    model.load_state_dict(initial)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    micro = BATCH // WRAPPER['num_microbatches']
    for indices in batches:
        batch = dict(inputs=[data['inputs'][i] for i in indices],
                     data_samples=[data['data_samples'][i] for i in indices])
        d = model.data_preprocessor(batch, True)
        chunks = len(indices) // micro
        for c in range(chunks):
            parts = model.loss(d['inputs'][c * micro:(c + 1) * micro],
                               d['data_samples'][c * micro:(c + 1) * micro])
            sum(v for k, v in parts.items() if 'loss' in k).backward()
        for p in model.parameters():
            if p.grad is not None:
                p.grad /= chunks
        opt.step()
        opt.zero_grad()
    return {k: v.detach() for k, v in model.named_parameters()}


@pytest.mark.slow
@needs_pipelining
def test_two_replicas_of_a_two_stage_pipeline_on_four_processes_equal_one_process(tmp_path):
    data = tiny_batch(SAMPLES)
    data_path = str(tmp_path / 'data.pth')
    torch.save(data, data_path)
    spawn_and_wait(_dp_pp_worker, (free_port(), str(tmp_path), data_path), 4, timeout=300)
    seen = [json.load(open(tmp_path / f'rank{r}.json'))['batches'] for r in range(4)]
    states = [torch.load(tmp_path / f'rank{r}.pth', weights_only=False) for r in range(4)]
    # rank = replica * 2 + stage: both stages of a replica read the same batches ...
    assert seen[0] == seen[1] and seen[2] == seen[3] and len(seen[0]) == ITERS
    # ... and the replicas disjoint ones; one epoch (2 steps) covers the data once
    for a, b in zip(seen[0], seen[2]):
        assert len(a) == len(b) == BATCH and not set(a) & set(b)
    assert sorted(seen[0][0] + seen[0][1] + seen[2][0] + seen[2][1]) == list(range(SAMPLES))
    reference = _reference_params(states[0]['initial'], data,
                                  [a + b for a, b in zip(seen[0], seen[2])])
    moved = max((reference[k] - states[0]['initial'][k]).abs().max() for k in reference)
    assert moved > 1e-3  # the steps changed the weights, so equality below means something
    for rank, state in enumerate(states):  # after the final sync every rank holds the model
        for k, v in reference.items():
            torch.testing.assert_close(state['final'][k], v, atol=1e-5, rtol=0,
                                       msg=f'rank {rank}: {k}')


# ------------------------------------------------------------------ two nodes
def _node(node_rank: int, cfg: str, port: int, log: str) -> subprocess.Popen:
    """``tools/dist_train.sh CFG 1`` as node ``node_rank`` of 2 (one process per node)."""
    # CPU processes (gloo) even on a GPU machine: both "nodes" would take local GPU 0
    env = dict(os.environ, NNODES='2', NODE_RANK=str(node_rank), MASTER_ADDR='127.0.0.1',
               PORT=str(port), PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, TESTS,
                                                      os.environ.get('PYTHONPATH')) if p))
    return subprocess.Popen(['bash', osp.join(REPO_ROOT, 'tools', 'dist_train.sh'), cfg, '1'],
                            cwd=REPO_ROOT, env=env, stdout=open(log, 'w'),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_nodes(nodes: List[subprocess.Popen], timeout: float) -> List[float]:
    """Wait for both launches; kill them (and fail) if they outlive ``timeout``.

    Returns:
        list[float]: the time each ended (``time.time()``).
    """
    deadline, ended = time.time() + timeout, [0.0] * len(nodes)
    while not all(ended) and time.time() < deadline:
        for i, node in enumerate(nodes):
            if not ended[i] and node.poll() is not None:
                ended[i] = time.time()
        time.sleep(0.2)
    if not all(ended):
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
        pytest.fail(f'the two nodes did not end within {timeout} s')
    return ended


def _two_node_config(synthetic_coco: str, work_dir: str, probes: List[dict],
                     timeout_s: int = 60) -> str:
    hooks = Config.fromfile(DEMO).custom_hooks + [
        dict(type='RecordRunHook', out_dir=osp.join(work_dir, 'probe'))] + probes
    return smoke_config(DEMO, synthetic_coco, work_dir, max_epochs=1, batch_size=2,
                        extra=dict(SMALL_DEMO, custom_imports=IMPORT_PROBES, custom_hooks=hooks,
                                   env_cfg=dict(dist_cfg=dict(timeout=timeout_s))))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f'/proc/{pid}/stat') as f:  # a zombie is dead but not yet reaped
            return f.read().split(') ', 1)[1][0] != 'Z'
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.mark.slow
def test_two_nodes_train_with_ddp_and_agree(synthetic_coco, tmp_path):
    work_dir = str(tmp_path / 'run')
    cfg = _two_node_config(synthetic_coco, work_dir, [])
    port = free_port()
    nodes = [_node(r, cfg, port, str(tmp_path / f'node{r}.log')) for r in (1, 0)]
    _wait_nodes(nodes, timeout=300)
    logs = [open(tmp_path / f'node{r}.log').read() for r in (0, 1)]
    for r, node in zip((1, 0), nodes):
        assert node.returncode == 0, logs[r][-4000:]
    probe = osp.join(work_dir, 'probe')
    states = [torch.load(osp.join(probe, f'rank{r}.pth'), weights_only=False) for r in (0, 1)]
    seen = [json.load(open(osp.join(probe, f'rank{r}.json')))['batches'] for r in (0, 1)]
    assert 'world_size: 2' in logs[0] or 'Distributed launcher: pytorch' in logs[0]
    # the two nodes' DDP replicas read disjoint halves of the data ...
    ids = [sum(batches, []) for batches in seen]
    assert len(ids[0]) == len(ids[1]) > 0 and not set(ids[0]) & set(ids[1])
    # ... and end with the same weights and buffers, which training changed
    for k, v in states[0]['final'].items():
        torch.testing.assert_close(states[1]['final'][k], v, atol=0, rtol=0, msg=k)
    assert any(not torch.equal(states[0]['initial'][k], v)
               for k, v in states[0]['final'].items() if v.is_floating_point())
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))


@pytest.mark.slow
def test_a_rank_killed_mid_ddp_step_on_the_other_node_is_named(synthetic_coco, tmp_path):
    """Rank 1 (node 1) dies while DDP reduces its gradients: node 1's launcher reports the
    signal, rank 0 on node 0 exits with one line naming rank 1, nothing is left running."""
    work_dir = str(tmp_path / 'run')
    timeout_s = 60
    kill = dict(type='KillRankHook', rank=1, at_iter=1, module='backbone.conv1', where='backward')
    cfg = _two_node_config(synthetic_coco, work_dir, [kill], timeout_s=timeout_s)
    port = free_port()
    nodes = [_node(r, cfg, port, str(tmp_path / f'node{r}.log')) for r in (1, 0)]
    ended_node1, ended_node0 = _wait_nodes(nodes, timeout=240)
    node1, node0 = nodes
    logs = {r: open(tmp_path / f'node{r}.log').read() for r in (0, 1)}
    assert node1.returncode != 0 and node0.returncode != 0
    probe = osp.join(work_dir, 'probe')
    pids = {r: int(open(osp.join(probe, f'rank{r}.pid')).read()) for r in (0, 1)}
    # node 1's torchrun names the signal that ended its rank
    assert 'Signal 9 (SIGKILL)' in logs[1] or 'exitcode  : -9' in logs[1], logs[1][-3000:]
    # rank 0 names the lost rank in one line, well within the process-group timeout
    line = next((ln for ln in logs[0].splitlines() if ln.startswith('error: rank 0')), '')
    assert (f'lost a process: rank 1 (pid {pids[1]} on {socket.gethostname()}) stopped '
            'without an error report') in line, logs[0][-3000:]
    # node 0 ended well before its process-group timeout could fire
    assert ended_node0 - ended_node1 < timeout_s / 2
    assert not any(_alive(pid) for pid in pids.values())  # no orphans


@pytest.mark.parametrize('env,message', [
    (dict(NNODES='2', NODE_RANK='1'), 'NNODES=2 needs MASTER_ADDR, the same on every node'),
    (dict(NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.1'), 'NNODES=2 needs PORT'),
    (dict(NNODES='2', NODE_RANK='2', MASTER_ADDR='10.0.0.1', PORT='29500'),
     'NODE_RANK=2 must be below NNODES=2'),
])
def test_a_multi_node_launch_must_name_one_rendezvous(env, message):
    base = {k: v for k, v in os.environ.items() if k not in ('MASTER_ADDR', 'PORT')}
    proc = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', 'dist_train.sh'), DEMO, '1'],
                          env=dict(base, **env), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
