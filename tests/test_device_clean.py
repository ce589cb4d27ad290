"""GPU readiness proven without a GPU: devices, host reads, mixed precision and torch.compile.

Three stand-ins for a CUDA device, each catching a different class of defect:

* ``meta`` tensors (forward and backward): a tensor made without the inputs' device (say
  ``torch.empty(shape)``) lands on the CPU and mixing it in raises, as on CUDA; any host read of a
  value (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``) raises, because meta tensors have
  no values.
* ``FakeTensorMode`` with ``torch.device('cuda')`` tensors (forward): device checks exactly as
  CUDA makes them (``FakeTensorDeviceMismatchError`` on a CPU tensor in the mix).
* :class:`helpers.no_host_read.NoHostReads` on the CPU with real values (forward and backward):
  every dispatched host read raises, and the results must equal a run without the mode.

CBN is checked after its burn-in with a full window (the compensated path, not plain BN).
"""
import pytest
import torch
import torch._dynamo as dynamo
from helpers.no_host_read import NoHostReads
from helpers.pose_models import build_tiny, tiny_batch
from helpers.torch_features import needs_cpu_float16_autocast, needs_fake_cuda, needs_modern_dynamo
from torch import nn
from torch._dynamo.utils import counters
from torch._subclasses.fake_tensor import FakeTensorMode

from mmpgnet.models.heads import HeatmapGuidance
from mmpgnet.models.losses import CDIoULoss, GIoULoss
from mmpgnet.models.norms import CBN, link_cbn_layers

CUDA = torch.device('cuda')

LOSSES = {
    'giou': lambda **kw: GIoULoss(**kw),
    'cdiou': lambda **kw: CDIoULoss(**kw),
    'cdiou_corner': lambda **kw: CDIoULoss(distance='corner', **kw),
}


def loss_calls():
    """Every reduction with and without weights ((n,) and (n, 4)) and ``avg_factor``."""
    calls = []
    for reduction in ('none', 'mean', 'sum'):
        for weight in (None, 'n', 'n4'):
            for avg_factor in (None, 3.0):
                if avg_factor is not None and reduction == 'sum':
                    continue  # refused by MMDetection's semantics (tested in test_losses.py)
                calls.append((reduction, weight, avg_factor))
    return calls


def boxes(n: int, device, seed: int = 0, requires_grad: bool = False) -> torch.Tensor:
    """``n`` valid boxes, made on the CPU and moved (meta keeps only the shape)."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 10
    out = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * 5], 1).to(device)
    return out.requires_grad_(requires_grad)


def run_loss(name, call, device, backward=True):
    reduction, weight_kind, avg_factor = call
    n = 12
    pred, target = boxes(n, device, 0, requires_grad=True), boxes(n, device, 1)
    weight = None
    if weight_kind is not None:
        shape = (n, ) if weight_kind == 'n' else (n, 4)
        weight = torch.rand(shape, generator=torch.Generator().manual_seed(2)).to(device)
        weight[:3] = 0  # zero weights: masked on the device, no early exit on the host
    loss = LOSSES[name](reduction=reduction, loss_weight=2.0)(
        pred, target, weight, avg_factor=avg_factor)
    if backward:
        loss.sum().backward()
    return loss, pred.grad


@pytest.mark.parametrize('name', list(LOSSES))
@pytest.mark.parametrize('call', loss_calls())
def test_losses_on_meta_forward_backward(name, call):
    loss, grad = run_loss(name, call, 'meta')
    assert loss.device.type == 'meta' and grad.device.type == 'meta' and grad.shape == (12, 4)
    assert loss.shape == ((12, ) if call[0] == 'none' else ())


@needs_fake_cuda
@pytest.mark.parametrize('name', list(LOSSES))
@pytest.mark.parametrize('call', loss_calls())
def test_losses_on_fake_cuda_forward(name, call):
    with FakeTensorMode():
        loss, _ = run_loss(name, call, CUDA, backward=False)
        assert loss.device == torch.device('cuda', 0)


@pytest.mark.parametrize('name', list(LOSSES))
def test_losses_read_no_value_on_the_host(name):
    for call in loss_calls():
        reference, ref_grad = run_loss(name, call, 'cpu')
        with NoHostReads():
            loss, grad = run_loss(name, call, 'cpu')
        torch.testing.assert_close(loss, reference, rtol=0, atol=0)
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)


@pytest.mark.parametrize('name', list(LOSSES))
def test_zero_weight_pairs_send_no_gradient_even_when_degenerate(name):
    """MMDetection skips an all-zero weight on the host; here zero weights are masked."""
    pred = boxes(6, 'cpu', 3)
    pred[0] = torch.tensor([5.0, 5.0, 1.0, 1.0])  # reversed box: a non-finite CDIoU
    pred[1] = torch.tensor([float('nan'), 0.0, 1.0, 1.0])
    pred.requires_grad_(True)
    weight = torch.tensor([0.0, 0.0, 1.0, 0.5, 2.0, 1.0])
    loss = LOSSES[name]()(pred, boxes(6, 'cpu', 4), weight, avg_factor=4.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert pred.grad[:2].abs().sum() == 0 and pred.grad[2:].abs().sum() > 0
    zero = LOSSES[name]()(pred, boxes(6, 'cpu', 4), torch.zeros(6))
    assert float(zero.detach()) == 0.0


@pytest.mark.parametrize('name', list(LOSSES))
@pytest.mark.parametrize(
    'dtype', [torch.bfloat16, pytest.param(torch.float16, marks=needs_cpu_float16_autocast)])
def test_losses_under_autocast_and_half_inputs(name, dtype):
    """Half-precision boxes are computed in float32 inside the fused function, under autocast
    or not: the loss equals the float32 loss of the same (rounded) boxes to float32 rounding,
    and the gradient differs from it only by its final rounding to the input's dtype (bound:
    that dtype's machine epsilon, relative, with a float32 summation margin)."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    target = boxes(64, 'cpu', 5)
    with torch.autocast('cpu', dtype=dtype):
        pred = target.to(dtype) + layer(torch.randn(64, 8))  # boxes decoded under autocast
        assert pred.dtype == dtype
        for reduction in ('none', 'mean'):
            half_pred = pred.detach().requires_grad_(True)
            full_pred = pred.detach().float().requires_grad_(True)
            loss = LOSSES[name](reduction=reduction)(half_pred, target.to(dtype))
            reference = LOSSES[name](reduction=reduction)(full_pred, target.to(dtype).float())
            assert loss.dtype == torch.float32
            torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
            grad, = torch.autograd.grad(loss.sum(), half_pred)
            ref_grad, = torch.autograd.grad(reference.sum(), full_pred)
            assert grad.dtype == dtype
            eps = torch.finfo(dtype).eps
            torch.testing.assert_close(grad.float(), ref_grad, rtol=eps, atol=1e-7)
        # and through the autocast model: gradients reach the layer, finite
        loss = LOSSES[name]()(pred, target)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


@needs_modern_dynamo
@pytest.mark.parametrize('name', list(LOSSES))
def test_losses_compile_without_graph_breaks(name):
    pred, target = boxes(16, 'cpu', 6, requires_grad=True), boxes(16, 'cpu', 7)
    weight = torch.rand(16, 4)
    module = LOSSES[name]()
    explanation = dynamo.explain(module)(pred, target, weight, avg_factor=3.0)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, \
        [b.reason for b in explanation.break_reasons]
    dynamo.reset()
    compiled = torch.compile(module, backend='aot_eager', fullgraph=True)
    loss = compiled(pred, target, weight, avg_factor=3.0)
    grad, = torch.autograd.grad(loss, pred)
    ref_grad, = torch.autograd.grad(module(pred, target, weight, avg_factor=3.0), pred)
    torch.testing.assert_close(loss, module(pred, target, weight, avg_factor=3.0))
    torch.testing.assert_close(grad, ref_grad)


# ---------------------------------------------------------------------------------------- CBN
def linked_cbn(groups: int = 1, grad_sample_stride: int = 2, buffer_num: int = 3,
               burnin_iters: int = 2, dtype=torch.float32, device='cpu',
               **options) -> nn.Sequential:
    """conv (stride 2) -> CBN on ``device``, linked by tracing there (as ``CBNHook`` does)."""
    torch.manual_seed(0)
    with torch.device(device):  # made there: FakeTensorMode cannot move modules (swap_tensors)
        net = nn.Sequential(
            nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=groups),
            CBN(8, buffer_num=buffer_num, burnin_iters=burnin_iters,
                grad_sample_stride=grad_sample_stride, **options))
    if dtype != torch.float32:
        net.to(dtype)
    report = link_cbn_layers(
        net, lambda: net(torch.randn(2, 4, 9, 11, dtype=dtype, device=device)))
    assert report.linked == {'1': '0'}
    return net


def cbn_steps(net, device, steps: int = 7, backward: bool = True, seed: int = 1,
              autocast_dtype=None):
    """Train steps (SGD); returns the outputs and the conv weight grads of each step.

    With ``autocast_dtype`` the forward runs under CPU autocast, as MMEngine's AMP wrappers do
    (forward only: autocast caches its casts of the parameters until the region ends, so an
    optimizer step inside the region would leave the conv computing with stale weights).
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = net[0].weight.dtype
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    outs, grads = [], []
    for _ in range(steps):
        x = torch.randn(3, 4, 9, 11, generator=gen, dtype=dtype).to(device)
        with torch.autocast('cpu', dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            out = net(x)
        outs.append(out.detach())
        if backward:
            opt.zero_grad()
            # a regression target: a loss that BN's invariance to the conv's scale and shift
            # does not make flat
            target = torch.randn(out.shape, generator=gen).to(device)
            (out - target).pow(2).mean().backward()
            grads.append(net[0].weight.grad.clone())
            opt.step()
    return outs, grads


#: CBN's options beyond the paper, checked like the default
BEYOND_PAPER = dict(differentiable_compensation=True, eval_stats='window')


@pytest.mark.parametrize('groups,stride,options', [(1, 2, {}), (2, 1, {}), (1, 1, {}),
                                                   (2, 2, BEYOND_PAPER)])
def test_cbn_on_meta_forward_backward_with_full_window(groups, stride, options):
    net = linked_cbn(groups, stride, **options).to('meta')
    outs, grads = cbn_steps(net, 'meta')
    cbn = net[1]
    assert cbn.conv is net[0] and outs[-1].device.type == 'meta'
    assert grads[-1].device.type == 'meta' and cbn.weight.grad.device.type == 'meta'
    assert cbn.win_dnu.device.type == 'meta' and cbn.compensating.device.type == 'meta'


@needs_fake_cuda
def test_cbn_on_fake_cuda_forward_with_full_window():
    with FakeTensorMode():
        net = linked_cbn(device=CUDA)
        outs, _ = cbn_steps(net, CUDA, backward=False)
        for buf in net[1].buffers():
            assert buf.device.type == 'cuda'
        assert outs[-1].device.type == 'cuda'


@pytest.mark.parametrize('groups,stride,options', [(1, 2, {}), (2, 2, {}), (1, 1, {}),
                                                   (2, 2, BEYOND_PAPER)])
def test_cbn_training_reads_no_value_on_the_host(groups, stride, options):
    reference_net = linked_cbn(groups, stride, **options)
    ref_outs, ref_grads = cbn_steps(reference_net, 'cpu')
    net = linked_cbn(groups, stride, **options)
    with NoHostReads():
        outs, grads = cbn_steps(net, 'cpu')
    assert bool(net[1].compensating) and int(net[1].win_pos) == 7  # recording from step -1
    for a, b in zip(outs + grads, ref_outs + ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cbn_float64_window_and_gradients():
    """``.double()`` before linking: the window is float64 too, no float32 anywhere."""
    net = linked_cbn(dtype=torch.float64)
    assert net[1].win_dnu.dtype == torch.float64 and net[1].win_mu.dtype == torch.float64
    outs, grads = cbn_steps(net, 'cpu')
    assert outs[-1].dtype == torch.float64 and grads[-1].dtype == torch.float64
    assert bool(net[1].compensating)


@pytest.mark.parametrize('dtype,tol', [
    (torch.bfloat16, 5e-2), pytest.param(torch.float16, 1e-2, marks=needs_cpu_float16_autocast)])
def test_cbn_under_autocast(dtype, tol):
    """Under CPU autocast the conv computes in half precision; CBN's statistics stay float32,
    and its output matches the float32 run within the conv's rounding (bounds: 5e-2 for bf16,
    1e-2 for fp16, absolute on unit-variance outputs)."""
    reference, ref_grads = cbn_steps(linked_cbn(), 'cpu')
    net = linked_cbn()
    outs, grads = cbn_steps(net, 'cpu', autocast_dtype=dtype)
    assert outs[-1].dtype == dtype and net[1].win_mu.dtype == torch.float32
    assert bool(net[1].compensating)
    for a, b in zip(outs, reference):
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol)
    for a, b in zip(grads, ref_grads):
        assert (a - b).norm() < tol * b.norm(), (float((a - b).norm() / b.norm()), tol)


@needs_cpu_float16_autocast
def test_cbn_window_stays_finite_under_float16_autocast_at_realistic_sizes():
    """Sums over every output position overflow float16 (65504) at batch 48 and 64x48: the
    statistic gradients are computed in float32 for float16 activations."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                        CBN(8, buffer_num=2, grad_sample_stride=1))
    link_cbn_layers(net, lambda: net(torch.randn(2, 3, 8, 8)))
    for _ in range(3):
        with torch.autocast('cpu', dtype=torch.float16):
            out = net(torch.randn(48, 3, 64, 48) * 2 + 1)
        out.float().square().mean().backward()
    assert torch.isfinite(net[1].win_dnu).all() and torch.isfinite(net[1].win_dmu).all()
    assert net[1].win_dnu.abs().max() > 1 and torch.isfinite(net[0].weight.grad).all()


@needs_modern_dynamo
def test_linked_cbn_compiles_without_graph_breaks_one_graph_per_grid_offset():
    net = linked_cbn()
    cbn_steps(net, 'cpu', steps=4)
    explanation = dynamo.explain(net)(torch.randn(3, 4, 9, 11))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, \
        [b.reason for b in explanation.break_reasons]
    # burn-in, recording and compensating share graphs: counters are device tensors, not
    # guards; only the sampling grid's offset (4 values at stride 2) is a Python int
    dynamo.reset()
    counters.clear()
    eager, compiled = linked_cbn(), linked_cbn()
    compiled_fn = torch.compile(compiled, backend='aot_eager', fullgraph=True)
    gen = torch.Generator().manual_seed(3)
    for step in range(12):
        if step == 8:
            graphs_after_two_cycles = counters['stats']['unique_graphs']
        x = torch.randn(3, 4, 9, 11, generator=gen)
        a, b = eager(x), compiled_fn(x)
        torch.testing.assert_close(a, b)
        (a * a).mean().backward()
        (b * b).mean().backward()
    torch.testing.assert_close(compiled[0].weight.grad, eager[0].weight.grad)
    torch.testing.assert_close(compiled[1].running_var, eager[1].running_var)
    assert bool(compiled[1].compensating) and int(compiled[1].win_pos) == 12
    assert counters['stats']['unique_graphs'] == graphs_after_two_cycles == 4


# ---------------------------------------------------------------------- guidance and estimator
def guidance_heads() -> HeatmapGuidance:
    from mmpose.models.losses import KeypointMSELoss
    return HeatmapGuidance(8, 17, in_levels=[0, 1], weights=[0.1, 0.2], feedback_weight=0.1,
                           loss=KeypointMSELoss(use_target_weight=True))


def guidance_inputs(device):
    gen = torch.Generator().manual_seed(0)
    levels = [torch.randn(2, 8, 16, 12, generator=gen), torch.randn(2, 8, 8, 6, generator=gen)]
    deep = torch.randn(2, 17, 32, 24, generator=gen)
    gt = torch.rand(2, 17, 32, 24, generator=gen)
    weights = torch.rand(2, 17, generator=gen)
    return [t.to(device) for t in levels], deep.to(device), gt.to(device), weights.to(device)


def guidance_loss(heads, device, scale):
    levels, deep, gt, weights = guidance_inputs(device)
    levels = [x.requires_grad_(True) for x in levels]
    losses = heads.loss(heads(levels), deep, gt, weights, scale=scale)
    return losses, levels


@needs_fake_cuda
def test_guidance_heads_on_meta_fake_cuda_and_without_host_reads():
    heads = guidance_heads().to('meta')
    losses, levels = guidance_loss(heads, 'meta', torch.full((), 0.5, device='meta'))
    sum(losses.values()).backward()
    assert set(losses) == {'loss_guide_l0', 'loss_guide_l1', 'loss_fb_l0', 'loss_fb_l1'}
    assert all(x.grad.device.type == 'meta' for x in levels)
    with FakeTensorMode(), torch.device(CUDA):
        heads = guidance_heads()
        losses, _ = guidance_loss(heads, CUDA, torch.full((), 0.5, device=CUDA))
        assert all(v.device.type == 'cuda' for v in losses.values())
    heads = guidance_heads()
    reference, _ = guidance_loss(heads, 'cpu', 0.5)
    with NoHostReads():
        losses, levels = guidance_loss(heads, 'cpu', torch.tensor(0.5))
        sum(losses.values()).backward()
    for key, value in reference.items():
        torch.testing.assert_close(losses[key], value)


def estimator_inputs(model, device):
    data = model.data_preprocessor(tiny_batch(2), True)
    inputs = data['inputs'].to(device)
    for sample in data['data_samples']:
        sample.gt_fields.heatmaps = sample.gt_fields.heatmaps.to(device)
        labels = sample.gt_instance_labels
        labels.keypoint_weights = labels.keypoint_weights.to(device)
    return inputs, data['data_samples']


def test_pgnet_estimator_loss_on_meta_and_without_host_reads():
    """``PGNetPoseEstimator.loss`` (guidance and feedback on, ``compute_acc`` off: MMPose's
    accuracy metric is computed with numpy on the host, MMPose's own choice)."""
    model = build_tiny()
    model.guidance_scale = 0.5
    inputs, samples = estimator_inputs(model, 'cpu')
    reference = model.loss(inputs, samples)
    with NoHostReads():
        losses = model.loss(inputs, samples)
        sum(losses.values()).backward()
    for key, value in reference.items():
        torch.testing.assert_close(losses[key], value)
    model.to('meta')
    assert model.guidance_scale.device.type == 'meta'
    inputs, samples = estimator_inputs(model, 'meta')
    losses = model.loss(inputs, samples)
    sum(losses.values()).backward()
    assert {'loss_kpt', 'loss_guide_l1', 'loss_fb_l3'} <= set(losses)
    assert all(p.grad is not None and p.grad.device.type == 'meta'
               for p in model.backbone.parameters())


@needs_fake_cuda
def test_pgnet_estimator_loss_on_fake_cuda():
    model = build_tiny()
    data = model.data_preprocessor(tiny_batch(2), True)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        with torch.device(CUDA):
            fake_model = build_tiny()
        inputs = mode.from_tensor(data['inputs']).to(CUDA)
        for sample in data['data_samples']:
            sample.gt_fields.heatmaps = mode.from_tensor(sample.gt_fields.heatmaps).to(CUDA)
            labels = sample.gt_instance_labels
            labels.keypoint_weights = mode.from_tensor(labels.keypoint_weights).to(CUDA)
        losses = fake_model.loss(inputs, data['data_samples'])
    assert all(v.device.type == 'cuda' for v in losses.values())


@needs_modern_dynamo
def test_pgnet_train_step_breaks_only_where_meant_to():
    """Under ``torch.compile`` MMEngine's ``train_step`` of the PGNet estimator splits only at
    the eager data preprocessing, MMPose's numpy accuracy and MMEngine's ``loss.backward()``:
    nothing of mmpgnet's model code breaks the graph."""
    from mmengine.optim import OptimWrapper
    model = build_tiny(compute_acc=True)
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    explanation = dynamo.explain(model.train_step)(tiny_batch(4), optim_wrapper)
    reasons = [b.reason for b in explanation.break_reasons]
    allowed = ('_preprocess_eagerly', 'heatmap_accuracy', 'Tensor.backward()')
    assert all(any(name in reason for name in allowed) for reason in reasons), reasons
    assert any('Tensor.backward()' in reason for reason in reasons)
