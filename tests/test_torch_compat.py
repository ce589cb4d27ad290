"""mmpgnet on older torch: features that need a newer one refuse in one line, the rest adapts.

These run on every torch: where the installed torch has a feature, an older version is
simulated by patching ``torch.__version__`` (what :mod:`mmpgnet.utils.torch_compat` reads).
``make test-compat`` also runs them on a real torch 2.1.2.
"""
import argparse

import pytest
import torch
from helpers.pose_models import build_tiny

import mmpgnet.utils.checkpoint_safety as checkpoint_safety
from mmpgnet.engine import CPUAmpOptimWrapper
from mmpgnet.utils import torch_compat
from mmpgnet.utils.launch import load_config, run_cli
from mmpgnet.utils.torch_compat import (TorchVersionError, cpu_autocast_supports, get_cpu_autocast,
                                        is_compiling, require_torch, set_cpu_autocast,
                                        torch_at_least)


@pytest.fixture
def torch_2_1(monkeypatch):
    """Make mmpgnet's version checks see torch 2.1.2."""
    monkeypatch.setattr(torch, '__version__', '2.1.2+cu121')


def test_version_comparison(monkeypatch):
    monkeypatch.setattr(torch, '__version__', '2.4.0+cpu')
    assert torch_at_least('2.4') and torch_at_least('2.1') and not torch_at_least('2.5')
    monkeypatch.setattr(torch, '__version__', '2.10.1')
    assert torch_at_least('2.4')  # numeric, not string, comparison


def test_require_torch_names_feature_and_versions(torch_2_1):
    require_torch('anything', '2.1')  # new enough: no error
    with pytest.raises(TorchVersionError) as info:
        require_torch('pipeline parallelism', '2.4')
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith('pipeline parallelism needs torch>=2.4; this is torch 2.1.2+cu121')


def test_pipeline_wrapper_and_runner_refuse_old_torch(torch_2_1):
    from mmpgnet.engine.model_wrappers import PipelineParallelWrapper
    from mmpgnet.engine.runner import PipelineParallelRunner
    model = build_tiny()
    with pytest.raises(TorchVersionError, match=r'pipeline parallelism .* needs torch>=2\.4'):
        PipelineParallelWrapper(model, num_stages=2)
    with pytest.raises(TorchVersionError, match=r'needs torch>=2\.4; this is torch 2\.1\.2'):
        PipelineParallelRunner(model=model, work_dir='unused',
                               cfg=dict(model_wrapper_cfg=dict(type='PipelineParallelWrapper')))


def test_compile_refused_by_the_tools_on_old_torch(torch_2_1, tmp_path, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text('compile = True\nmodel = dict(type="Nothing")\n')
    args = argparse.Namespace(config=str(config), cfg_options=None, synthetic_data=None,
                              work_dir=str(tmp_path), launcher='none', local_rank=0)
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: load_config(args))
    assert str(info.value) == ('error: compile=True (torch.compile of the model) needs '
                               'torch>=2.4; this is torch 2.1.2+cu121 (pip install "torch>=2.4")')
    config.write_text('compile = False\nmodel = dict(type="Nothing")\n')
    assert load_config(args).compile is False  # the rest of the config loads on torch 2.1


def test_checkpoint_allowlist_skipped_where_torch_has_none(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.serialization, 'add_safe_globals', calls.append, raising=False)
    checkpoint_safety.allow_mmengine_checkpoints()
    assert len(calls) == 1 and checkpoint_safety.HistoryBuffer in calls[0]
    monkeypatch.delattr(torch.serialization, 'add_safe_globals')
    checkpoint_safety.allow_mmengine_checkpoints()  # torch < 2.4: nothing to add, no error
    assert len(calls) == 1


def test_cpu_autocast_state_round_trip():
    before = get_cpu_autocast()
    try:
        set_cpu_autocast(True, torch.bfloat16)
        assert get_cpu_autocast() == (True, torch.bfloat16)
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    finally:
        set_cpu_autocast(*before)
    assert get_cpu_autocast() == before
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert get_cpu_autocast() == (True, torch.bfloat16)


def test_cpu_float16_autocast_refused_in_one_line_where_missing(monkeypatch):
    assert cpu_autocast_supports(torch.bfloat16)
    monkeypatch.setattr(torch_compat, 'cpu_autocast_supports', lambda dtype: False)
    import mmpgnet.engine.optim_wrappers.cpu_amp_optim_wrapper as module
    monkeypatch.setattr(module, 'cpu_autocast_supports', lambda dtype: False)
    param = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(TorchVersionError, match="does not support torch.float16 .*'bfloat16'"):
        CPUAmpOptimWrapper(dtype='float16', optimizer=torch.optim.SGD([param], lr=0.1))


def test_is_compiling_outside_and_inside_a_trace():
    assert is_compiling() is False
    seen = []

    def f(x):
        seen.append(is_compiling())
        return x + 1

    torch._dynamo.reset()
    torch.compile(f, backend='eager')(torch.ones(2))
    assert seen == [True]
