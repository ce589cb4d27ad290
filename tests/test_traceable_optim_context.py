"""traceable_optim_context: MMEngine's AMP context, entered so that torch.compile traces it."""
import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_wrapper_module
import pytest
import torch
import torch.nn as nn
from helpers.torch_features import needs_modern_dynamo
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmpgnet.engine import CPUAmpOptimWrapper
from mmpgnet.engine.optim_wrappers import traceable_optim_context
from mmpgnet.utils.torch_compat import get_cpu_autocast

# the wrapper's GradScaler disables itself on a machine without CUDA, which it announces
pytestmark = pytest.mark.filterwarnings(
    'ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available:UserWarning')


def _amp_wrapper(model: nn.Module, monkeypatch, **kwargs) -> AmpOptimWrapper:
    # MMEngine's wrapper asserts a GPU at construction; its context itself runs on any device
    monkeypatch.setattr(amp_wrapper_module, 'is_cuda_available', lambda: True)
    return AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


@needs_modern_dynamo
def test_amp_context_autocasts_like_mmengines_and_compiles_in_one_graph(monkeypatch):
    model = nn.Linear(4, 3)
    wrapper = _amp_wrapper(model, monkeypatch, dtype='bfloat16')
    x = torch.randn(2, 4)

    def forward(inputs):
        with traceable_optim_context(wrapper, model):
            return model(inputs)

    with wrapper.optim_context(model):  # MMEngine's own context: the reference
        expected = model(x)
    assert expected.dtype == torch.bfloat16
    eager = forward(x)
    assert eager.dtype == torch.bfloat16 and torch.equal(eager, expected)
    assert not get_cpu_autocast()[0]  # left again on exit
    torch._dynamo.reset()
    compiled = torch.compile(forward, fullgraph=True, backend='eager')(x)  # no graph break
    assert compiled.dtype == torch.bfloat16 and torch.equal(compiled, expected)


def test_amp_context_keeps_gradient_accumulation_no_sync(monkeypatch):
    model = nn.Linear(4, 3)
    calls = []
    model.no_sync = lambda: calls.append('no_sync') or torch.autocast('cpu', enabled=False)
    wrapper = _amp_wrapper(model, monkeypatch, dtype='bfloat16', accumulative_counts=2)
    wrapper.initialize_count_status(model, 0, 4)
    with traceable_optim_context(wrapper, model):  # first of two accumulated steps: no sync
        pass
    assert calls == ['no_sync']


def test_other_wrappers_keep_their_own_context():
    model = nn.Sequential()
    model.backbone = nn.Linear(4, 4)
    for wrapper in (OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1)),
                    CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))):
        context = traceable_optim_context(wrapper, model)
        assert context.gen.__qualname__ == f'{type(wrapper).__name__}.optim_context'
