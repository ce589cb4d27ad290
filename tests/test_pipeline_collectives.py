"""The pipeline wrapper's collectives take tensors on the backend's device, without host syncs.

NCCL takes CUDA tensors only. No GPU exists here, so the model's tensors are
:class:`~helpers.emulated_cuda.EmulatedCuda` (``cuda:0`` with real values) and ``torch.distributed``
is replaced by :class:`FakeNccl`: this process is one rank of a 2-stage x 2-replica job, every
collective fails as NCCL does on a tensor that is not on the current CUDA device, and the other
ranks are emulated (all_reduce SUM: the others hold the same values; broadcast: the source holds
these values; all_gather: the others send the same tensor, or what the test says). The wrapper
runs its real code: ``train_step`` (model broadcast, ``split_points='auto'`` agreement, stage
gradient averaging, loss and timing sharing), ``sync_stages`` and ``gather_optimizer_state``;
only torch's pipeline stage and schedule (point-to-point sends between processes) are stood in
for by the last stage's work done in this process.
"""
import time
from typing import Any, Dict, List, Optional

import pytest
import torch
import torch.distributed as dist
from helpers.emulated_cuda import (CUDA0, EmulatedCuda, EmulatedCudaMode, emulate_cuda, host_values,
                                   module_to_emulated_cuda, record_host_syncs)
from helpers.pose_models import build_tiny, tiny_batch
from helpers.torch_features import needs_fake_cuda, needs_pipelining
from mmengine.optim import OptimWrapper

import mmpgnet.engine.model_wrappers.pipeline_parallel_wrapper as pgw
from mmpgnet.engine.pipeline import ChunkTimer, balance, check_model_device, collective_device

STAGES, REPLICAS, MICRO, BATCH, LR = 2, 2, 4, 8, 0.1
RANK = 3  # the last stage of replica 1: pipeline group [2, 3], data-parallel group [1, 3]


class FakeGroup:
    """A process group of the emulated job: its global ranks."""

    def __init__(self, ranks: List[int]) -> None:
        self.ranks = list(ranks)


class FakeNccl:
    """``torch.distributed`` as seen by one rank of an NCCL job (see the module docstring).

    Args:
        world_size (int): processes of the emulated job.
        rank (int): this process's rank.
    """

    def __init__(self, world_size: int, rank: int) -> None:
        self.world_size, self.rank = world_size, rank
        self.world = FakeGroup(range(world_size))
        self.calls: List[Dict[str, Any]] = []
        self.peer_objects: Dict[int, Any] = {}  # group rank -> its all_gather_object (else ours)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> 'FakeNccl':
        for name in ('is_available', 'is_initialized'):
            monkeypatch.setattr(dist, name, lambda: True)
        monkeypatch.setattr(dist, 'get_backend', lambda group=None: 'nccl')
        monkeypatch.setattr(dist, 'get_world_size', lambda group=None: len(self._ranks(group)))
        monkeypatch.setattr(dist, 'get_rank',
                            lambda group=None: self._ranks(group).index(self.rank))
        monkeypatch.setattr(dist.distributed_c10d, '_get_default_group', lambda: self.world)
        monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
        for name in ('new_group', 'all_reduce', 'broadcast', 'all_gather', 'all_gather_object',
                     'broadcast_object_list'):
            monkeypatch.setattr(dist, name, getattr(self, name))
        return self

    def _ranks(self, group: Optional[FakeGroup]) -> List[int]:
        group = group or self.world
        assert self.rank in group.ranks, f'rank {self.rank} called a collective of {group.ranks}'
        return group.ranks

    def _record(self, op: str, group: Optional[FakeGroup], tensors=(), **info: Any) -> None:
        for t in tensors:
            if not (t.is_cuda and t.device == CUDA0):  # ProcessGroupNCCL's check
                raise ValueError(f'{op}: Tensors must be CUDA and dense (got one on {t.device}); '
                                 'NCCL takes tensors on the current CUDA device only')
        self.calls.append(dict(op=op, ranks=self._ranks(group),
                               tensors=[host_values(t).clone() for t in tensors], **info))

    def new_group(self, ranks, **kwargs: Any) -> FakeGroup:
        return FakeGroup(ranks)

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False) -> None:
        assert op == dist.ReduceOp.SUM
        self._record('all_reduce', group, [tensor])
        tensor.mul_(len(self._ranks(group)))  # every rank holds the same values

    def broadcast(self, tensor, src, group=None, async_op=False) -> None:
        assert src in self._ranks(group), f'broadcast from {src}, not in {self._ranks(group)}'
        self._record('broadcast', group, [tensor], src=src)

    def all_gather(self, tensor_list, tensor, group=None, async_op=False) -> None:
        ranks = self._ranks(group)
        assert len(tensor_list) == len(ranks)
        self._record('all_gather', group, [tensor] + list(tensor_list))
        for out in tensor_list:
            out.copy_(tensor)

    def all_gather_object(self, object_list, obj, group=None) -> None:
        ranks = self._ranks(group)
        self._record('all_gather_object', group)
        for i in range(len(ranks)):
            object_list[i] = obj if ranks[i] == self.rank else self.peer_objects.get(i, obj)

    def broadcast_object_list(self, object_list, src=None, group=None, device=None) -> None:
        assert src == self.rank, 'this test runs the source rank of object broadcasts'
        if device is not None and torch.device(device) != CUDA0:
            raise ValueError(f'broadcast_object_list on {device}: NCCL needs the current device')
        self._record('broadcast_object_list', group, src=src)

    def ops(self, name: str) -> List[Dict[str, Any]]:
        return [c for c in self.calls if c['op'] == name]


class FakeStage:
    """Stands in for ``TimedPipelineStage`` (which needs peers to talk to); host-clock timing."""

    def __init__(self, submod, stage_index, num_stages, device, group=None,
                 sync_cuda=True) -> None:
        self.submod, self.stage_index, self.device, self.group = submod, stage_index, device, group
        self.is_last = stage_index == num_stages - 1
        self.timer = ChunkTimer('cpu')

    def reset_timing(self) -> None:
        self.timer.reset()

    @property
    def compute_s(self) -> float:
        return self.timer.collect()


class LastStageWork:
    """What torch's schedule does on the last stage, done in this process.

    :meth:`forward` runs every stage on the first stage's batch ``inputs`` (model code; the
    schedule's ``step`` runs it first if it was not run before the step); ``step`` then hands
    the outputs of each micro-batch to the loss function, and, as backward cannot run on
    emulated CUDA tensors, sets this stage's gradients (``grad_of`` of each parameter).
    """

    def __init__(self) -> None:
        self.wrapper = None
        self.inputs: tuple = ()
        self.outputs: List[tuple] = []

    def forward(self) -> None:
        chunks = [torch.tensor_split(t, MICRO) for t in self.inputs]
        with torch.no_grad():
            self.outputs = []
            for i in range(MICRO):
                out = tuple(c[i] for c in chunks)
                for stage in self.wrapper.stage_modules:
                    out = stage(*out)
                self.outputs.append(out)

    def schedule(self, stage, n_microbatches, loss_fn) -> Any:
        work = self

        class Schedule:

            def step(self, *args, target=None) -> None:
                assert stage.is_last and not args and target.is_cuda and n_microbatches == MICRO
                if not work.outputs:
                    work.forward()
                for out, t in zip(work.outputs, torch.tensor_split(target, MICRO)):
                    loss_fn(out, t)
                work.outputs = []
                for p in stage.submod.parameters():
                    p.grad = emulate_cuda(grad_of(p))

        return Schedule()


def fake_cuda_event(clock, log: List[str]) -> type:
    """A stand-in for ``torch.cuda.Event``: the ``clock()`` time when recorded; logs calls."""

    class FakeEvent:

        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing
            self.t = None

        def record(self) -> None:
            self.t = clock()
            log.append('record')

        def synchronize(self) -> None:
            log.append('sync')

        def elapsed_time(self, end: 'FakeEvent') -> float:
            return (end.t - self.t) * 1e3  # milliseconds

    return FakeEvent


def grad_of(p: torch.Tensor) -> torch.Tensor:
    """A fixed gradient per parameter (values depend on its shape and position)."""
    n = p.numel()
    return torch.linspace(-1.0, 1.0, n).reshape(p.shape) * (1 + n % 7)


def _emulated_tiny(seed: int = 0) -> torch.nn.Module:
    model = build_tiny(seed)
    module_to_emulated_cuda(model)
    model.data_preprocessor._device = CUDA0  # as model.cuda() sets it
    return model


@pytest.fixture
def nccl(monkeypatch: pytest.MonkeyPatch) -> FakeNccl:
    return FakeNccl(STAGES * REPLICAS, RANK).install(monkeypatch)


@needs_fake_cuda
def test_emulated_cuda_computes_real_values_and_catches_cpu_mixes():
    torch.manual_seed(0)
    conv, x = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)), \
        torch.randn(2, 3, 6, 6)
    ref = conv(x)
    module_to_emulated_cuda(conv)
    with EmulatedCudaMode(), record_host_syncs() as syncs:
        out = conv(x.to(CUDA0))
        assert isinstance(out, EmulatedCuda) and out.is_cuda and syncs == ['h2d']
        torch.testing.assert_close(host_values(out), ref, rtol=0, atol=0)
        with pytest.raises(RuntimeError, match='two devices, cuda:0 and cpu'):
            out + x.new_ones(out.shape)
        made = torch.tensor([1.5, 2.5], dtype=torch.float64, device=CUDA0)
        assert isinstance(made, EmulatedCuda) and made.tolist() == [1.5, 2.5]
        assert float(made.sum()) == 4.0
    assert syncs == ['h2d', 'h2d', 'to_cpu', 'item']


def test_collective_device_follows_the_backend(monkeypatch):
    assert collective_device() == torch.device('cpu')  # no process group
    backend = ['nccl']
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'get_backend', lambda group=None: backend[0])
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 1)
    assert collective_device() == torch.device('cuda', 1)
    backend[0] = 'gloo'
    assert collective_device() == torch.device('cpu')
    backend[0] = 'cpu:gloo,cuda:nccl'
    assert collective_device() == torch.device('cuda', 1)
    backend[0] = 'nccl'
    with pytest.raises(ValueError, match="backend 'nccl' takes cuda tensors but the model is on "
                       'cpu: move it to cuda:1'):
        check_model_device(torch.device('cpu'))
    with pytest.raises(ValueError, match=r'model is on cuda:0 but .* current cuda device is '
                       r'cuda:1: call torch.cuda.set_device'):
        check_model_device(torch.device('cuda', 0))
    check_model_device(torch.device('cuda', 1))
    backend[0] = 'cpu:gloo,cuda:nccl'  # gloo takes a CPU model's tensors
    check_model_device(torch.device('cpu'))


@needs_pipelining
def test_a_cpu_model_under_nccl_fails_when_the_wrapper_is_built(nccl):
    with pytest.raises(ValueError, match="'nccl' takes cuda tensors but the model is on cpu"):
        pgw.PipelineParallelWrapper(build_tiny(), num_stages=STAGES)


@needs_fake_cuda
def test_every_collective_of_a_pipeline_run_is_on_the_nccl_device(nccl, monkeypatch):
    block_ms = [float(i % 5 + 1) for i in range(40)]  # stands in for the measured times
    profiled = []

    def fake_profile(graph, inputs, loss_fn, iters=3):
        profiled.append([t.device for t in inputs])
        return block_ms[:len(graph.blocks)], [1024] * (len(graph.blocks) + 1)

    work, events = LastStageWork(), []
    monkeypatch.setattr(torch.cuda, 'Event', fake_cuda_event(time.perf_counter, events))
    monkeypatch.setattr(pgw, 'profile_blocks', fake_profile)
    monkeypatch.setattr(pgw, 'TimedPipelineStage', FakeStage)
    monkeypatch.setattr(pgw, 'PIPELINE_SCHEDULES', {'GPipe': work.schedule})
    model = _emulated_tiny()
    wrapper = pgw.PipelineParallelWrapper(model, num_stages=STAGES, num_microbatches=MICRO,
                                          split_points='auto', profile_iters=1)
    work.wrapper = wrapper
    assert (wrapper.stage, wrapper.layout.replica) == (1, 1)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9))
    data = tiny_batch(BATCH)
    with EmulatedCudaMode():
        work.inputs = wrapper.adapter.pack(model.data_preprocessor(data, True))
        before = {n: host_values(p).clone() for n, p in model.named_parameters()}
        wrapper.train_step(data, optim)  # first step: broadcast, agree on the split, build

        # --- the initial model broadcast: from global rank 0 over the world group
        casts = nccl.ops('broadcast')
        assert casts and all(c['src'] == 0 and c['ranks'] == [0, 1, 2, 3] for c in casts)
        n_values = sum(t.numel() for t in list(model.parameters()) + list(model.buffers()))
        assert sum(c['tensors'][0].numel() for c in casts) == n_values

        # --- split_points='auto': the mean over the 4 ranks of equal times is the local time
        n_blocks = len(wrapper.graph.blocks)
        assert profiled == [[CUDA0] * 3]
        (agree, ) = [c for c in nccl.ops('all_reduce') if c['ranks'] == [0, 1, 2, 3]]
        assert agree['tensors'][0].tolist() == block_ms[:n_blocks]
        assert wrapper.report.block_ms == block_ms[:n_blocks]
        assert wrapper.cuts == balance(block_ms[:n_blocks], STAGES)

        # --- stage gradients averaged over the replicas [1, 3]: the mean of equal gradients
        (average, ) = [c for c in nccl.ops('all_reduce') if c['ranks'] == [1, 3]]
        own = list(wrapper.stage_modules[1].parameters())
        assert average['tensors'][0].numel() == sum(p.numel() for p in own)
        own_ids = {id(p) for p in own}
        for name, p in model.named_parameters():
            expected = before[name] - LR * grad_of(p) if id(p) in own_ids else before[name]
            torch.testing.assert_close(host_values(p), expected, rtol=0, atol=1e-6, msg=name)

        # --- steady state: no host sync; losses and timing shared in one device all_gather
        recorded = []
        real_losses = wrapper.adapter.losses

        def recording_losses(state):
            parts = real_losses(state)
            recorded.append({k: host_values(v).item() for k, v in parts.items()})
            return parts

        monkeypatch.setattr(wrapper.adapter, 'losses', recording_losses)
        nccl.calls.clear()
        events.clear()
        work.forward()  # the stages' forward (model code) before the step
        with record_host_syncs() as syncs:
            log_vars = wrapper.train_step(data, optim)
        assert syncs == [], f'host syncs in a training step: {syncs}'
        assert events == ['record', 'record', 'sync']  # the step's CUDA timing: one wait
        assert [c['op'] for c in nccl.calls] == ['all_reduce', 'all_gather']
        gather = nccl.ops('all_gather')[0]
        assert gather['ranks'] == [2, 3]  # this replica's pipeline
        row = gather['tensors'][0]
        assert len(recorded) == MICRO and row.numel() == 2 + len(recorded[0])
        for k, v in log_vars.items():
            assert v.is_cuda and v.dim() == 0 and v.dtype == torch.float32, k
        expected = {k: sum(r[k] for r in recorded) / MICRO for k in recorded[0]}
        expected['loss'] = sum(v for k, v in expected.items() if 'loss' in k)
        assert {k: host_values(v).item() for k, v in log_vars.items()} == \
            pytest.approx(expected, rel=1e-6)
        stats = wrapper.last_stats  # read once, after the step
        assert stats.stage_compute_s == [row[0].item()] * STAGES  # the loss chunks' time
        assert stats.stage_step_s == [row[1].item()] * STAGES and 0 < row[0] < row[1]
        assert stats.bubble_ideal == pytest.approx(1 / 5) and not stats.local

        # --- sync_stages: each stage's owner in this replica (ranks 2, 3) broadcasts it
        nccl.calls.clear()
        wrapper.sync_stages()
        assert {c['src'] for c in nccl.calls} == {2, 3}
        assert all(c['op'] == 'broadcast' and c['ranks'] == [2, 3] for c in nccl.calls)
        sizes = {src: sum(c['tensors'][0].numel() for c in nccl.calls if c['src'] == src)
                 for src in (2, 3)}
        assert sizes == {2 + s: sum(t.numel() for t in list(m.parameters()) + list(m.buffers()))
                         for s, m in enumerate(wrapper.stage_modules)}

        # --- optimizer state: this stage's entries, and stage 0's sent by rank 2
        params = [p for g in optim.optimizer.param_groups for p in g['params']]
        stage0 = {id(p) for p in wrapper.stage_modules[0].parameters()}
        nccl.peer_objects[0] = {i: {'momentum_buffer': torch.full(p.shape, float(i))}
                                for i, p in enumerate(params) if id(p) in stage0}
        state = wrapper.gather_optimizer_state(optim.optimizer)
    assert [c['ranks'] for c in nccl.ops('all_gather_object')] == [[2, 3]]
    assert sorted(state) == list(range(len(params)))
    mine = optim.optimizer.state_dict()['state']
    for i, p in enumerate(params):
        buf = state[i]['momentum_buffer']
        assert buf.device.type == 'cpu'  # not rebuilt on the sender's GPU by the receiver
        ref = torch.full(p.shape, float(i)) if id(p) in stage0 else \
            host_values(mine[i]['momentum_buffer'])
        assert torch.equal(buf, ref), i


def test_chunk_timer_waits_for_cuda_once_per_step_not_per_chunk(monkeypatch):
    clock, log = [0.0], []

    def chunk(seconds: float) -> float:
        clock[0] += seconds
        return seconds

    monkeypatch.setattr(torch.cuda, 'Event', fake_cuda_event(lambda: clock[0], log))
    timer = ChunkTimer(CUDA0)
    for seconds in (0.5, 0.25, 1.0):
        assert timer.run(chunk, seconds) == seconds
        clock[0] += 10.0  # waiting between chunks is not compute
    assert log == ['record'] * 6  # no wait for the device while the chunks run
    assert timer.collect() == pytest.approx(1.75) and log[6:] == ['sync']
    timer.reset()
    assert timer.collect() == 0.0 and log[7:] == []
    host = ChunkTimer(CUDA0, cuda_events=False)  # host clock: no events, no waits
    host.run(chunk, 1.0)
    assert host.collect() > 0 and log[7:] == []
