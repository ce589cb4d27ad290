"""Broken, foreign and half-written checkpoints: one line naming the file, and atomic saves."""
import io
import os
import os.path as osp
import pickle
import signal

import pytest
import torch
import torch.distributed as dist
from helpers.configs import smoke_config
from helpers.distributed import free_port, init_gloo, spawn_and_wait
from helpers.pose_models import build_tiny
from helpers.scale_out import DEMO, IMPORT_PROBES, SMALL_DEMO, TESTS
from helpers.tool_runs import REPO_ROOT, run_tool, run_tool_result
from mmengine.config import Config
from mmengine.fileio import get_file_backend

from mmpgnet.utils import atomic_local_backend, checkpoint_check
from mmpgnet.utils.checkpoint_check import (CheckpointError, check_checkpoint_fits,
                                            check_same_checkpoint_on_every_rank,
                                            find_resumable_checkpoint, read_checkpoint, weights_of)
from mmpgnet.utils.launch import use_atomic_checkpoints


def _save(path, obj) -> str:
    torch.save(obj, str(path))
    return str(path)


def _bytes_of(obj, **kwargs) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def _write(path, data: bytes) -> str:
    with open(path, 'wb') as f:
        f.write(data)
    return str(path)


GOOD = dict(state_dict=dict(w=torch.ones(64, 3)), meta=dict(epoch=1))


@pytest.mark.parametrize('name,make,message', [
    ('empty', lambda: b'', 'is empty (0 bytes)'),
    ('truncated', lambda: _bytes_of(GOOD)[:700], 'is truncated (700 bytes; its zip archive'),
    ('html', lambda: b'<html><body>404 Not Found</body></html>', "not a PyTorch checkpoint "
     "(it starts with b'<htm')"),
    ('garbage', lambda: bytes(range(7, 256)) * 8, "not a PyTorch checkpoint (it starts with "
     "b'\\x07\\x08"),
    ('legacy_truncated', lambda: _bytes_of(GOOD, _use_new_zipfile_serialization=False)[:300],
     'cannot be read (an old-format or plain pickle: cut short, or not written by torch.save)'),
    ('list', lambda: _bytes_of([torch.ones(2)]), 'holds a list, not a dict of weights'),
    ('no_tensors', lambda: _bytes_of(dict(meta=dict(epoch=3))),
     "holds no model weights (no tensors under 'state_dict'; top-level keys: ['meta'])"),
])
def test_unusable_files_give_one_line_naming_file_and_problem(tmp_path, name, make, message):
    path = _write(tmp_path / f'{name}.pth', make())
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f'checkpoint {path} ') and message in text
    assert '\n' not in text and len(text) < 400


# torch >= 2.6 warns that protocol 4 is not its default before refusing the file
@pytest.mark.filterwarnings('ignore:Detected pickle protocol 4:UserWarning')
def test_a_plain_pickle_is_refused_without_torchs_long_message(tmp_path):
    path = _write(tmp_path / 'plain.pth', pickle.dumps({'w': [1.0, 2.0]}, protocol=4))
    # torch >= 2.6 refuses its opcodes under weights_only, older torch finds no magic number
    with pytest.raises(CheckpointError, match=r'cannot be read \(an old-format or plain pickle'):
        read_checkpoint(path)


def test_missing_file_and_good_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth does not exist'):
        read_checkpoint(str(tmp_path / 'nope.pth'))
    path = _save(tmp_path / 'good.pth', dict(state_dict={'module.w': torch.ones(2)}))
    assert list(weights_of(read_checkpoint(path))) == ['w']  # MMEngine's key revision


# ---------------------------------------------------------------------------------- model fit
def test_the_same_model_fits_every_mode():
    model = build_tiny()
    weights = model.state_dict()
    for mode in ('resume', 'test', 'load_from'):
        check_checkpoint_fits(weights, model, 'same.pth', mode)
    with pytest.raises(ValueError, match='mode must be one of'):
        check_checkpoint_fits(weights, model, 'same.pth', 'strict')


def test_another_model_is_refused_with_what_differs():
    model = build_tiny()
    weights = dict(model.state_dict())
    weights['head.final_layer.weight'] = torch.zeros(14, 16, 1, 1)  # another number of key points
    weights['head.final_layer.bias'] = torch.zeros(14)
    for mode in ('resume', 'test'):
        with pytest.raises(CheckpointError, match=r'x.pth is not a checkpoint of this model '
                           r'\(PGNetPoseEstimator\): 2 tensors have other shapes, e.g. '
                           r'head.final_layer.weight: \(14, 16, 1, 1\) in the file, '
                           r'\(17, 16, 1, 1\) in the model'):
            check_checkpoint_fits(weights, model, 'x.pth', mode)
    check_checkpoint_fits(weights, model, 'x.pth', 'load_from')  # fine-tuning to 14 key points

    linear = torch.nn.Linear(3, 2).state_dict()
    with pytest.raises(CheckpointError, match='none of its 2 tensors fits one of the model'):
        check_checkpoint_fits(linear, model, 'x.pth', 'load_from')
    # BatchNorm counters (0-dim) alone do not make a checkpoint fit
    counters = {k: v for k, v in model.state_dict().items() if k.endswith('num_batches_tracked')}
    with pytest.raises(CheckpointError, match='none of its'):
        check_checkpoint_fits(counters, model, 'x.pth', 'load_from')


def test_missing_and_extra_tensors_by_mode():
    guided, plain = build_tiny(), build_tiny(guidance=None)
    # a guidance checkpoint tests with the plain model (extra guidance heads are not needed) ...
    check_checkpoint_fits(guided.state_dict(), plain, 'g.pth', 'test')
    # ... but does not resume it
    with pytest.raises(CheckpointError, match=r'it has \d+ tensors the model lacks \(guidance\.'):
        check_checkpoint_fits(guided.state_dict(), plain, 'g.pth', 'resume')
    # a plain checkpoint lacks the guidance heads of a guidance model
    for mode in ('test', 'resume'):
        with pytest.raises(CheckpointError, match=r"it lacks \d+ of the model's tensors "
                           r'\(guidance\.'):
            check_checkpoint_fits(plain.state_dict(), guided, 'p.pth', mode)


# ---------------------------------------------------------------------------------- resume
def _ckpt(work_dir, name, complete=True) -> str:
    data = _bytes_of(GOOD)
    return _write(osp.join(work_dir, name), data if complete else data[:500])


def _record(work_dir, path) -> None:
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(path)


def test_resume_finds_the_newest_complete_checkpoint(tmp_path, monkeypatch):
    work = str(tmp_path)
    logged = []
    monkeypatch.setattr(checkpoint_check, 'print_log', lambda msg, *a, **k: logged.append(msg))
    assert find_resumable_checkpoint(work) is None  # nothing saved yet: start from scratch
    assert logged == [f'--resume: no checkpoint in {work} yet: the run starts as the config says']
    logged.clear()
    first = _ckpt(work, 'epoch_1.pth')
    second = _ckpt(work, 'epoch_2.pth')
    _ckpt(work, 'best_coco_AP_epoch_3.pth')  # a best checkpoint would rewind training
    _record(work, second)
    assert find_resumable_checkpoint(work) == second
    # the recorded checkpoint was cut short (a writer without atomic saves, a lost power)
    tenth = _ckpt(work, 'epoch_10.pth', complete=False)
    _record(work, tenth)
    assert find_resumable_checkpoint(work) == second  # by step number: 10, then 2, then 1
    assert len(logged) == 1 and f'skipped checkpoint {tenth} is truncated' in logged[0]
    assert logged[0].endswith(f'resuming from {second}')
    os.remove(second)
    assert find_resumable_checkpoint(work) == first


@pytest.mark.parametrize('cli, cfg, expected', [
    (None, dict(), (None, '--resume')),  # no resume: the config as it is
    (None, dict(resume=True), ('auto', 'resume=True')),  # MMEngine's "latest": ours instead
    (None, dict(resume=True, load_from='w/epoch_3.pth'), (None, '--resume')),  # MMEngine's
    (None, dict(resume=False, load_from='w/epoch_3.pth'), (None, '--resume')),
    ('auto', dict(resume=True, load_from='w/epoch_3.pth'), ('auto', '--resume')),  # CLI wins
    ('x/epoch_2.pth', dict(resume=True), ('x/epoch_2.pth', '--resume')),
])
def test_resume_request(cli, cfg, expected):
    assert checkpoint_check.resume_request(cli, Config(cfg)) == expected


def test_resume_refuses_when_no_checkpoint_is_complete(tmp_path):
    work = str(tmp_path)
    # max_keep_ckpts=1 removed epoch_1 before saving epoch_2, and that save was cut short
    _record(work, osp.join(work, 'epoch_1.pth'))
    broken = _ckpt(work, 'epoch_2.pth', complete=False)
    with pytest.raises(CheckpointError, match=(
            f'no complete checkpoint in {work}: {work}/epoch_1.pth \\(named in last_checkpoint\\) '
            f'does not exist; {broken} is truncated')):
        find_resumable_checkpoint(work)


# ---------------------------------------------------------------------------------- atomic save
def test_atomic_backend_writes_whole_files_or_nothing(tmp_path, monkeypatch):
    backend = get_file_backend(str(tmp_path), backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, atomic_local_backend.AtomicLocalBackend)
    path = str(tmp_path / 'sub' / 'epoch_1.pth')
    backend.put(b'first', path)
    backend.put_text('second', path + '.txt')
    assert backend.get(path) == b'first' and backend.get_text(path + '.txt') == 'second'

    def killed_before_rename(src, dst):
        raise KeyboardInterrupt  # the run is stopped between writing and renaming

    monkeypatch.setattr(atomic_local_backend.os, 'replace', killed_before_rename)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'new weights', path)
    assert backend.get(path) == b'first'  # the old file is intact ...
    # ... and no temporary file is left
    assert sorted(os.listdir(tmp_path / 'sub')) == ['epoch_1.pth', 'epoch_1.pth.txt']


def test_train_configs_save_atomically_unless_they_name_a_backend(tmp_path):
    cfg = Config(dict(work_dir=str(tmp_path), default_hooks=dict(checkpoint=dict(interval=1))))
    use_atomic_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')
    for hook in (dict(backend_args=dict(backend='petrel')), dict(out_dir='s3://bucket/ckpt')):
        cfg = Config(dict(work_dir=str(tmp_path), default_hooks=dict(checkpoint=hook)))
        use_atomic_checkpoints(cfg)
        assert cfg.default_hooks.checkpoint.get('backend_args') == hook.get('backend_args')


def test_removal_waits_for_the_next_completed_save(tmp_path, monkeypatch):
    """CheckpointHook(max_keep_ckpts=1) removes epoch_1 before it saves epoch_2."""
    backend = get_file_backend(str(tmp_path), backend_args=dict(backend='atomic_local'))
    first, second = str(tmp_path / 'epoch_1.pth'), str(tmp_path / 'epoch_2.pth')
    backend.put(b'epoch 1', first)
    backend.remove(first)
    assert osp.isfile(first)  # still there while the next save runs ...
    monkeypatch.setattr(atomic_local_backend.os, 'fsync', _raise_interrupt)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'epoch 2', second)  # ... which is killed: epoch_1 survives
    assert os.listdir(tmp_path) == ['epoch_1.pth']
    monkeypatch.undo()
    backend.put(b'epoch 2', second)  # a completed save of that folder removes it
    assert os.listdir(tmp_path) == ['epoch_2.pth']
    with pytest.raises(FileNotFoundError):
        backend.remove(first)


def _raise_interrupt(*args):
    raise KeyboardInterrupt


# ---------------------------------------------------------------------------------- the tools
def _tool_error(args) -> str:
    """Run a tool that must fail; return its output, checked to end in one error line."""
    with pytest.raises(pytest.fail.Exception) as failure:
        run_tool(args, timeout=300)
    out = str(failure.value)
    assert 'Traceback' not in out, out[-3000:]
    return out.strip().splitlines()[-1]


@pytest.mark.slow
def test_tools_name_the_broken_checkpoint_in_one_line(synthetic_coco, tmp_path):
    cfg = smoke_config(DEMO, synthetic_coco, str(tmp_path / 'run'), extra=SMALL_DEMO)
    data = _bytes_of(dict(state_dict=build_tiny().state_dict()))
    files = dict(truncated=(_write(tmp_path / 'truncated.pth', data[:len(data) // 2]),
                            'is truncated'),
                 empty=(_write(tmp_path / 'empty.pth', b''), 'is empty (0 bytes)'),
                 garbage=(_write(tmp_path / 'garbage.pth', b'\x00\x01' * 999),
                          'is not a PyTorch checkpoint'),
                 other_model=(_write(tmp_path / 'other.pth', data),
                              'is not a checkpoint of this model (PGNetPoseEstimator): '))
    for path, problem in files.values():
        line = _tool_error(['test.py', cfg, path])
        assert line.startswith(f'error: checkpoint {path} ') and problem in line, line
    path, problem = files['truncated']
    line = _tool_error(['train.py', cfg, '--resume', path])
    assert line.startswith(f'error: checkpoint {path} ') and problem in line, line
    linear = _save(tmp_path / 'linear.pth', dict(state_dict=torch.nn.Linear(2, 2).state_dict()))
    line = _tool_error(['train.py', cfg, '--cfg-options', f'load_from={linear}'])
    assert 'none of its 2 tensors fits one of the model' in line, line


@pytest.mark.slow
@pytest.mark.parametrize('backend', ['atomic_local', 'local'])
def test_a_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(
        synthetic_coco, tmp_path, backend):
    """The second epoch's save is killed (SIGKILL) after its bytes are written: with the
    atomic backend (the tools' default) before the rename, with MMEngine's ``LocalBackend``
    half-way into the checkpoint's own file. ``--resume`` continues from epoch 1 either way,
    although ``max_keep_ckpts=1`` had already asked to delete epoch 1."""
    work_dir = str(tmp_path / 'run')
    kill = dict(type='KillDuringSaveHook', n=2, plain=backend == 'local')
    hooks = Config.fromfile(DEMO).custom_hooks + [kill]
    checkpoint = dict(interval=1, max_keep_ckpts=1, save_best=None,
                      backend_args=dict(backend=backend))
    cfg = smoke_config(DEMO, synthetic_coco, work_dir, max_epochs=2, extra=dict(
        SMALL_DEMO, custom_imports=IMPORT_PROBES, custom_hooks=hooks,
        default_hooks=dict(checkpoint=checkpoint), train_cfg=dict(val_interval=10)))
    env = dict(PYTHONPATH=os.pathsep.join([REPO_ROOT, TESTS]))
    result = run_tool_result(['train.py', cfg], env=env, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stdout[-3000:]
    first, second = osp.join(work_dir, 'epoch_1.pth'), osp.join(work_dir, 'epoch_2.pth')
    if backend == 'atomic_local':  # the old checkpoint stayed, the new one never appeared
        assert osp.isfile(first) and not osp.exists(second)
    else:  # LocalBackend deleted epoch 1 and left half of epoch 2
        assert not osp.exists(first) and osp.getsize(second) > 0
    # resume without the fault: only MMEngine's LocalBackend has lost the last checkpoint
    resume_cfg = smoke_config(DEMO, synthetic_coco, work_dir, max_epochs=2, extra=dict(
        SMALL_DEMO, train_cfg=dict(val_interval=10),
        default_hooks=dict(checkpoint=dict(interval=1, max_keep_ckpts=1, save_best=None))))
    if backend == 'local':
        # --resume, and a config's own resume=True (MMEngine would try last_checkpoint's
        # deleted epoch_1.pth)
        for args, option in ((['--resume'], '--resume'),
                             (['--cfg-options', 'resume=True'], 'resume=True')):
            line = _tool_error(['train.py', resume_cfg] + args)
            assert line == (f'error: {option}: no complete checkpoint in {work_dir}: {first} '
                            f'(named in last_checkpoint) does not exist; {second} is truncated '
                            f'({osp.getsize(second)} bytes; its zip archive has no central '
                            'directory): the run that wrote it was probably stopped while saving')
        return
    out = run_tool(['train.py', resume_cfg, '--resume'], timeout=300)
    assert f'Load checkpoint from {first}' in out and 'resumed epoch: 1' in out, out[-3000:]
    assert read_checkpoint(second)['meta']['epoch'] == 2
    assert not [f for f in os.listdir(work_dir) if '.tmp' in f]  # the killed save's file too
    assert not osp.exists(first)  # max_keep_ckpts=1 once the new save completed


def _resume_worker(rank: int, port: int, out_dir: str) -> None:
    init_gloo(rank, 2, port, timeout_s=30)
    try:
        # node 0 sees its checkpoint; node 1, without shared storage, none
        check_same_checkpoint_on_every_rank('w/epoch_3.pth' if rank == 0 else None)
    except CheckpointError as error:
        with open(osp.join(out_dir, f'rank{rank}.txt'), 'w') as f:
            f.write(str(error))
    check_same_checkpoint_on_every_rank('w/epoch_3.pth')  # agreeing ranks pass
    dist.barrier()  # torch 2.1's gloo can hang in destroy while a peer is still sending
    dist.destroy_process_group()


def test_ranks_that_would_resume_from_different_checkpoints_refuse(tmp_path):
    check_same_checkpoint_on_every_rank('x.pth')  # one process: nothing to compare
    spawn_and_wait(_resume_worker, (free_port(), str(tmp_path)), 2, timeout=120)
    for rank in range(2):
        assert open(tmp_path / f'rank{rank}.txt').read().startswith(
            '--resume: the ranks found different checkpoints (rank 0: w/epoch_3.pth, rank 1: '
            'none): put the work dir on storage every node sees')
