"""Hooks and a dataset for the scale-out and fault tests: record what each rank saw, kill a rank.

Training processes import this through ``custom_imports=dict(imports=['helpers.scale_out'])``
with ``tests/`` on ``PYTHONPATH``; spawned workers import it directly.
"""
import json
import os
import os.path as osp
import signal
from typing import List, Optional

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import DATASETS, HOOKS

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(osp.dirname(TESTS), 'configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py')
#: the demo model at a quarter of the width: runs of the tools stay quick on 2 cores
SMALL_DEMO = dict(model=dict(backbone=dict(stem_channels=8, base_channels=8),
                             neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
                             head=dict(in_channels=16, deconv_out_channels=(16, ))))
#: ``custom_imports`` of a config whose run uses these hooks (``tests/`` on ``PYTHONPATH``)
IMPORT_PROBES = dict(imports=['mmpgnet', 'helpers.scale_out'], allow_failed_imports=False)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _plain_model(runner) -> torch.nn.Module:
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@DATASETS.register_module(force=True)
class PackedSamples(torch.utils.data.Dataset):
    """Samples of a packed batch saved with ``torch.save`` (``inputs`` / ``data_samples`` lists).

    Each sample's metainfo gets ``sample_idx``, so that hooks can tell which samples a rank saw.

    Args:
        path (str): the saved batch.
    """

    def __init__(self, path: str) -> None:
        batch = torch.load(path, weights_only=False)
        self.samples = list(zip(batch['inputs'], batch['data_samples']))
        for i, (_, sample) in enumerate(self.samples):
            sample.set_metainfo(dict(sample_idx=i))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict:
        inputs, sample = self.samples[idx]
        return dict(inputs=inputs, data_samples=sample)


@HOOKS.register_module(force=True)
class RecordRunHook(Hook):
    """Write, per rank, its pid at start, the samples of every batch, and its weights.

    Files in ``out_dir``: ``rank{r}.pid``, ``rank{r}.json`` (``batches``), ``rank{r}.pth``
    (``initial`` and ``final`` state dicts of the plain model).

    Args:
        out_dir (str): where to write.
    """

    priority = 'VERY_LOW'

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.batches: List[List[int]] = []
        self.initial: Optional[dict] = None

    def before_run(self, runner) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        with open(osp.join(self.out_dir, f'rank{_rank()}.pid'), 'w') as f:
            f.write(str(os.getpid()))

    def before_train(self, runner) -> None:
        self.initial = {k: v.clone() for k, v in _plain_model(runner).state_dict().items()}

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        # PackedSamples numbers its samples; MMPose's datasets give the annotation id
        self.batches.append([int(s.metainfo.get('sample_idx', s.metainfo.get('id', -1)))
                             for s in data_batch['data_samples']])

    def after_train(self, runner) -> None:
        rank = _rank()
        with open(osp.join(self.out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(dict(batches=self.batches), f)
        torch.save(dict(initial=self.initial, final=_plain_model(runner).state_dict()),
                   osp.join(self.out_dir, f'rank{rank}.pth'))


@HOOKS.register_module(force=True)
class KillRankHook(Hook):
    """SIGKILL one rank in the middle of a training iteration.

    ``where='forward'``: when ``module`` (a submodule name of the plain model) has computed its
    forward output; ``'backward'``: when the gradient of its first parameter is computed (DDP has
    started reducing the gradients of later layers by then).

    Args:
        rank (int): the rank to kill.
        at_iter (int): the iteration (0-based) in which it dies.
        module (str): the submodule whose forward / backward triggers it.
        where (str): ``'forward'`` or ``'backward'``.
    """

    def __init__(self, rank: int, at_iter: int, module: str, where: str = 'forward') -> None:
        assert where in ('forward', 'backward')
        self.rank, self.at_iter, self.module, self.where = rank, at_iter, module, where

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter != self.at_iter or _rank() != self.rank:
            return
        target = _plain_model(runner).get_submodule(self.module)
        if self.where == 'forward':
            target.register_forward_hook(lambda *args: _die())
        else:
            next(target.parameters()).register_hook(lambda grad: _die())


@HOOKS.register_module(force=True)
class KillDuringSaveHook(Hook):
    """SIGKILL the process inside the ``n``-th checkpoint save, after the bytes are written.

    The kill point is the first ``os.fsync`` or file-backend ``put`` of that save: with the
    atomic backend the data sits in a temporary file not yet renamed into place; with
    MMEngine's plain ``LocalBackend`` (``plain=True``) half the bytes are written into the
    checkpoint's own name first, as a kill in the middle of its write leaves it.

    Args:
        n (int): which save (1-based) dies.
        plain (bool): the run saves with MMEngine's ``LocalBackend``.
    """

    def __init__(self, n: int, plain: bool = False) -> None:
        self.n, self.plain, self.saves = n, plain, 0

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.saves += 1
        if self.saves != self.n:
            return
        if self.plain:
            from mmengine.fileio import LocalBackend

            def half_then_die(backend, obj: bytes, filepath) -> None:
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                _die()

            LocalBackend.put = half_then_die
        else:
            os.fsync = lambda fd: _die()
