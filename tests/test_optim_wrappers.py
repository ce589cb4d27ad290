"""CPUAmpOptimWrapper: bfloat16 autocast of backbone/neck, float32 everywhere else."""
import pytest
import torch
import torch.nn as nn
from helpers.torch_features import needs_modern_dynamo

from mmpgnet.engine import CPUAmpOptimWrapper
from mmpgnet.utils.torch_compat import get_cpu_autocast


class _Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3)
        self.neck = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)
        self.seen = {}

    def forward(self, x):
        feat = self.neck(self.backbone(x))
        self.seen['neck_out'] = feat.dtype
        out = self.head(feat)
        self.seen['head_out'] = out.dtype
        return out


def test_backbone_and_neck_autocast_head_float32():
    net = _Net()
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    x = torch.randn(2, 3, 8, 8)
    with wrapper.optim_context(net):
        out = net(x)
    assert net.seen == {'neck_out': torch.float32, 'head_out': torch.float32}
    # the conv inside really ran in bfloat16: its result differs from the float32 one
    ref = net(x)
    assert not torch.equal(out, ref) and torch.allclose(out, ref, atol=0.1)
    loss = out.square().mean()
    wrapper.update_params(loss)
    assert all(p.dtype == torch.float32 and p.grad is None for p in net.parameters())
    # hooks are gone after the context, autocast is off
    assert not net.backbone._forward_pre_hooks and not net.backbone._forward_hooks
    assert not get_cpu_autocast()[0]


def test_model_without_named_parts_is_autocast_whole():
    net = nn.Sequential(nn.Linear(4, 4))
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    with wrapper.optim_context(net):
        out = net(torch.randn(3, 4))
    assert out.dtype == torch.float32


def test_bad_dtype():
    with pytest.raises(ValueError, match="'bfloat16' or 'float16'"):
        CPUAmpOptimWrapper(dtype='int8', optimizer=torch.optim.SGD([nn.Parameter(
            torch.ones(1))], lr=0.1))


@needs_modern_dynamo
def test_autocast_boundary_compiles_into_one_graph_and_leaves_no_state():
    """Under torch.compile the hooks' autocast switches are traced: one graph, the bfloat16
    result of eager autocast, and autocast is off again afterwards (also after an error)."""
    import torch._dynamo as dynamo
    torch.manual_seed(0)
    net = _Net()
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1))

    def step(x):
        with wrapper.optim_context(net):
            return net(x)

    x = torch.randn(2, 3, 8, 8)
    eager = step(x)
    explanation = dynamo.explain(step)(x)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0
    dynamo.reset()
    compiled = torch.compile(step, backend='aot_eager')(x)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    assert not get_cpu_autocast()[0] and not wrapper._saved
    with pytest.raises(RuntimeError):
        with wrapper.optim_context(net):
            net(torch.randn(2, 5, 8, 8))  # wrong channels: the backbone raises inside autocast
    assert not get_cpu_autocast()[0] and not wrapper._saved
