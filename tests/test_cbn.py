"""Tests of Cross-Iteration BatchNorm (CBN), its conv linking, CBNHook and the Table-3 configs."""
import copy
import glob
import io
import os.path as osp
import re
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmpgnet  # noqa: F401
from mmpgnet.models.norms import CBN, link_cbn_layers
from mmpgnet.models.norms.cbn_function import CrossIterationBNFunction
from mmpgnet.models.norms.cbn_statistic_grads import (mean_patch_sum, sample_strides,
                                                      second_moment_grad_sum)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CBN_CONFIGS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'cbn', '*.py')))


def conv_cbn(buffer_num: int = 3, burnin_iters: int = 0, cin: int = 3, cout: int = 8,
             groups: int = 1, bias: bool = False, **cbn_options) -> nn.Sequential:
    """A conv followed by CBN, linked by tracing."""
    net = nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=bias),
        CBN(cout, buffer_num=buffer_num, burnin_iters=burnin_iters, **cbn_options))
    report = link_cbn_layers(net, lambda: net(torch.randn(2, cin, 6, 6)))
    assert report.linked == {'1': '0'}
    return net


def batch_stats(y: torch.Tensor):
    """Per-channel mean and second moment of a (N, C, H, W) tensor."""
    return y.mean((0, 2, 3)), (y * y).mean((0, 2, 3))


def normalise(y, mu, var, cbn):
    return F.batch_norm(y, mu, var, cbn.weight, cbn.bias, False, 0.0, cbn.eps)


def test_lr0_statistics_are_window_average():
    torch.manual_seed(0)
    net = conv_cbn(buffer_num=3)
    conv, cbn = net
    nn.init.uniform_(cbn.weight, 0.5, 1.5)
    nn.init.normal_(cbn.bias)
    history = []
    for step in range(6):
        x = torch.randn(2, 3, 5, 5) * (1 + step) + step  # batches with different statistics
        with torch.no_grad():
            y = conv(x)
        history.append(batch_stats(y))
        out = net(x)
        window = history[-4:]  # current + 3 past
        mus = torch.stack([m for m, _ in window])
        nus = torch.maximum(torch.stack([n for _, n in window]), mus**2)
        mu, var = mus.mean(0), nus.mean(0) - mus.mean(0)**2
        expected = normalise(y, mu, var, cbn)
        assert cbn.compensating == (step > 0)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    # eval uses the running statistics (updated with each current batch, as BN)
    net.eval()
    torch.testing.assert_close(net(x), normalise(y, cbn.running_mean, cbn.running_var, cbn))


@pytest.mark.parametrize('groups,bias', [(1, False), (2, True)])
def test_compensation_beats_plain_average(groups, bias):
    torch.manual_seed(0)
    net = conv_cbn(buffer_num=3, cin=4, cout=8, groups=groups, bias=bias)
    conv, cbn = net
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    batches = {}
    comp_err = plain_err = 0.0
    for step in range(8):
        if step >= 3:
            with torch.no_grad():
                comp_mu, comp_nu = cbn._compensated_window(conv)
                true = [batch_stats(conv(batches[int(s)])) for s in range(3)]
                true_mu = torch.stack([t[0] for t in true])
                true_nu = torch.stack([t[1] for t in true])
            comp_err += ((comp_mu - true_mu)**2).sum() + ((comp_nu - true_nu)**2).sum()
            plain_err += ((cbn.win_mu - true_mu)**2).sum() + ((cbn.win_nu - true_nu)**2).sum()
        x = torch.randn(4, 4, 6, 6) + 0.5
        batches[int(cbn.win_pos) % 3] = x
        out = net(x)
        loss = (out * torch.linspace(-1, 2, 8).view(1, -1, 1, 1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert plain_err > 1e-4  # the weights did move
    assert comp_err < 0.2 * plain_err, (float(comp_err), float(plain_err))


def patch_second_moment_sum(conv, x, y):
    """Reference ``sum over batch and positions of y_c * P`` by unfolding the input patches."""
    if conv.padding_mode != 'zeros':
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    else:
        padding = conv.padding
    patches = F.unfold(x, conv.kernel_size, conv.dilation, padding, conv.stride)
    n, _, positions = patches.shape
    g = conv.groups
    patches = patches.view(n, g, -1, positions)  # (N, G, D, L)
    yg = y.reshape(n, g, -1, positions)  # (N, G, C/G, L)
    return torch.einsum('ngcl,ngdl->gcd', yg, patches).reshape(y.shape[1], -1)


@pytest.mark.parametrize('kernel,stride,padding,dilation,groups,hw,mode', [
    (3, 1, 1, 1, 1, (7, 9), 'zeros'),
    (3, 2, 1, 1, 2, (11, 8), 'zeros'),
    (1, 1, 0, 1, 1, (5, 5), 'zeros'),
    (3, 2, 2, 2, 1, (13, 10), 'reflect'),
    (7, 2, 3, 1, 1, (15, 15), 'zeros'),
    (3, 1, 1, 1, 1, (1, 6), 'zeros'),  # a map thinner than the stride
])
def test_subsampled_second_moment_gradient(kernel, stride, padding, dilation, groups, hw, mode):
    """The grid estimate of d nu / d W: exact at stride 1; over one offset cycle the grids
    partition the positions, so their sums add up to the exact sum (unbiased over the cycle)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, kernel, stride, padding, dilation, groups, padding_mode=mode).double()
    x = torch.randn(3, 4, *hw, dtype=torch.float64)
    y = conv(x).detach()
    reference = patch_second_moment_sum(conv, x, y)
    conv_in = x if mode == 'zeros' else F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
    pad = conv.padding if mode == 'zeros' else (0, 0)
    exact, m = second_moment_grad_sum(conv, conv_in, pad, y, grad_sample_stride=1, grid_phase=0)
    torch.testing.assert_close(exact.reshape(6, -1), reference)
    assert m == y.shape[0] * y.shape[2] * y.shape[3]
    # d mu / dW: the sum of the input patches (per group), from one strided view
    patches = F.unfold(conv_in, conv.kernel_size, conv.dilation, pad, conv.stride)
    patch_sum = mean_patch_sum(conv, conv_in, pad, y.shape[2:])
    torch.testing.assert_close(patch_sum.reshape(-1), patches.sum((0, 2)))

    sh, sw = sample_strides(y.shape[2:], grad_sample_stride=2)
    assert (sh, sw) == tuple(2 if size >= 2 else 1 for size in y.shape[2:])
    total, counted, grids = 0, 0, []
    for phase in range(sh * sw):
        grid_sum, grid_m = second_moment_grad_sum(conv, conv_in, pad, y, 2, grid_phase=phase)
        grids.append(grid_sum)
        total, counted = total + grid_sum, counted + grid_m
    assert counted == m
    torch.testing.assert_close(total.reshape(6, -1), reference)
    assert not torch.allclose(grids[0], grids[-1])  # the offsets really differ


def reference_cbn(x, weight, bias, past_mu, past_nu, eps):
    """Autograd reference: pool statistics as Eq. 11 of the paper, normalise."""
    var_t, mu_t = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    mus = torch.cat([mu_t[None], past_mu])
    nus = torch.maximum(torch.cat([(var_t + mu_t**2)[None], past_nu]), mus**2)
    mu = mus.mean(0)
    var = nus.mean(0) - mu**2
    return ((x - mu.view(1, -1, 1, 1)) * torch.rsqrt(var + eps).view(1, -1, 1, 1)
            * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1))


def test_gradients_flow_to_input_and_affine_and_match_reference():
    torch.manual_seed(0)
    net = conv_cbn(buffer_num=2).double()
    conv, cbn = net
    nn.init.uniform_(cbn.weight, 0.5, 1.5)
    for _ in range(3):
        net(torch.randn(3, 3, 5, 5, dtype=torch.double))
    x = torch.randn(3, 3, 5, 5, dtype=torch.double, requires_grad=True)
    y = conv(x)
    with torch.no_grad():
        past_mu, past_nu = cbn._compensated_window(conv)
    out = cbn(y)
    assert cbn.compensating
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), (x, cbn.weight, cbn.bias, conv.weight),
                                retain_graph=True)
    ref = reference_cbn(y, cbn.weight, cbn.bias, past_mu.double(), past_nu.double(), cbn.eps)
    ref_grads = torch.autograd.grad((ref * g).sum(), (x, cbn.weight, cbn.bias, conv.weight))
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('groups,bias', [(1, False), (2, True)])
def test_differentiable_compensation_matches_autograd_of_compensated_forward(groups, bias):
    torch.manual_seed(0)
    net = conv_cbn(buffer_num=2, cin=4, groups=groups, bias=bias,
                   differentiable_compensation=True).double()
    conv, cbn = net
    nn.init.uniform_(cbn.weight, 0.5, 1.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    for _ in range(3):  # the weights move, so the compensation is not zero
        train_steps(net, opt, [torch.randn(3, 4, 5, 5, dtype=torch.double)])
    x = torch.randn(3, 4, 5, 5, dtype=torch.double, requires_grad=True)
    params = (x, cbn.weight, cbn.bias, conv.weight) + ((conv.bias, ) if bias else ())
    g = torch.randn(3, 8, 5, 5, dtype=torch.double)
    # reference: plain autograd through the compensation (window entries are constants)
    y = conv(x)
    past_mu, past_nu = cbn._compensated_window(conv, detach=False)
    ref = reference_cbn(y, cbn.weight, cbn.bias, past_mu, past_nu, cbn.eps)
    ref_grads = torch.autograd.grad((ref * g).sum(), params)
    paper_grads = torch.autograd.grad(
        (reference_cbn(conv(x), cbn.weight, cbn.bias, past_mu.detach(), past_nu.detach(),
                       cbn.eps) * g).sum(), params)
    out = net(x)
    assert cbn.compensating
    grads = torch.autograd.grad((out * g).sum(), params)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    # the option changes the conv's gradients (and only those)
    assert (grads[3] - paper_grads[3]).abs().max() > 1e-3 * grads[3].abs().max()
    for got, paper in zip(grads[:3], paper_grads[:3]):
        torch.testing.assert_close(got, paper)


def test_cross_iteration_function_gradcheck_including_clamped_entries():
    torch.manual_seed(0)
    opts = dict(dtype=torch.double, requires_grad=True)
    x = torch.randn(2, 3, 3, 3, **opts)
    weight, bias = torch.rand(3, **opts) + 0.5, torch.randn(3, **opts)
    past_mu = torch.randn(3, 3, **opts)
    # entry 0 has nu < mu^2 in every channel (it is raised to mu^2), entry 2 is not valid
    past_nu = (past_mu.detach()**2 + torch.tensor([[-0.3], [0.5], [0.7]]).double()).requires_grad_()
    valid = torch.tensor([True, True, False])

    def fn(*args):
        return CrossIterationBNFunction.apply(*args, valid, 1e-5)[0]

    assert torch.autograd.gradcheck(fn, (x, weight, bias, past_mu, past_nu))
    grads = torch.autograd.grad(fn(x, weight, bias, past_mu, past_nu).pow(2).sum(),
                                (past_mu, past_nu))
    assert (grads[1][0] == 0).all() and (grads[0][2] == 0).all() and (grads[1][2] == 0).all()
    assert (grads[1][1] != 0).all() and (grads[0][0] != 0).all()


def test_eval_stats_window_averages_the_pooled_statistics():
    torch.manual_seed(0)
    net = conv_cbn(buffer_num=3, eval_stats='window')
    conv, cbn = net
    cbn.momentum = 1.0  # the running statistics are the last update
    history = []
    for step in range(5):
        x = torch.randn(2, 3, 5, 5) * (1 + step) + step
        with torch.no_grad():
            y = conv(x)
            net(x)
        history.append(batch_stats(y))
    mus = torch.stack([m for m, _ in history[-4:]])
    nus = torch.maximum(torch.stack([n for _, n in history[-4:]]), mus**2)
    mu, var = mus.mean(0), nus.mean(0) - mus.mean(0)**2
    m = 4 * 2 * 5 * 5
    torch.testing.assert_close(cbn.running_mean, mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cbn.running_var, var * m / (m - 1), rtol=1e-4, atol=1e-5)
    # the default follows BN: the last batch's own statistics
    net = conv_cbn(buffer_num=3)
    net[1].momentum = 1.0
    for step in range(3):
        x = torch.randn(2, 3, 5, 5)
        with torch.no_grad():
            net(x)
    var_t, mu_t = torch.var_mean(net[0](x), dim=(0, 2, 3))
    torch.testing.assert_close(net[1].running_mean, mu_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net[1].running_var, var_t, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shape', [(1, 3, 1, 1), (1, 3, 4, 4), (2, 3, 1, 1)])
def test_batch_size_one_and_1x1_maps(shape):
    torch.manual_seed(0)
    net = conv_cbn(buffer_num=2)
    for _ in range(4):
        x = torch.randn(*shape, requires_grad=True)
        out = net(x)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert net[1].compensating


def test_plain_bn_before_burnin_and_when_unlinked():
    torch.manual_seed(0)
    net = conv_cbn(buffer_num=2, burnin_iters=3)
    bn = nn.BatchNorm2d(8)
    bn.load_state_dict(net[1].state_dict(), strict=False)
    for step in range(5):
        x = torch.randn(2, 3, 5, 5)
        y = net[0](x)
        out, ref = net[1](y), bn(y)
        assert net[1].compensating == (step >= 3)
        if step < 3:
            torch.testing.assert_close(out, ref)
    # the window was filled during the last buffer_num iterations of the burn-in
    assert int(net[1].win_pos) == 4
    unlinked = CBN(8)
    unlinked.load_state_dict(bn.state_dict(), strict=False)
    y = torch.randn(4, 8, 3, 3)
    torch.testing.assert_close(unlinked(y), bn(y))
    assert not unlinked.compensating


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='buffer_num'):
        CBN(8, buffer_num=-1)
    with pytest.raises(ValueError, match='burnin_iters'):
        CBN(8, burnin_iters=-2)
    with pytest.raises(ValueError, match='grad_sample_stride'):
        CBN(8, grad_sample_stride=0)
    with pytest.raises(ValueError, match='eval_stats'):
        CBN(8, eval_stats='pooled')
    with pytest.raises(ValueError, match='differentiable_compensation'):
        CBN(8, differentiable_compensation='yes')
    with pytest.raises(ValueError, match='4D'):
        CBN(8).train()(torch.randn(2, 8))
    with pytest.raises(ValueError, match='output channels'):
        CBN(8).link_conv(nn.Conv2d(3, 4, 1))
    from mmpgnet.engine.hooks.cbn_hook import CBNHook
    with pytest.raises(ValueError, match='not both'):
        CBNHook(burnin_epochs=1, burnin_iters=3)


def train_steps(net, opt, batches):
    outs = []
    for x in batches:
        out = net(x)
        opt.zero_grad()
        out.pow(2).mean().backward()
        opt.step()
        outs.append(out.detach())
    return outs


@pytest.mark.parametrize('options', [
    dict(), dict(differentiable_compensation=True, eval_stats='window')])
def test_save_load_resume_is_exact(options):
    torch.manual_seed(0)
    batches = [torch.randn(2, 3, 6, 6) for _ in range(7)]
    net = conv_cbn(buffer_num=3, **options)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    train_steps(net, opt, batches[:5])  # 5 steps: the sampling grid is mid-cycle (phase 1)
    assert net[1].grid_phase == 1
    buf = io.BytesIO()
    torch.save(dict(model=net.state_dict(), opt=opt.state_dict()), buf)
    uninterrupted = train_steps(net, opt, batches[5:])

    resumed = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                            CBN(8, buffer_num=3, **options))
    assert resumed[1].win_dnu.numel() == 0  # shapes come from the checkpoint
    buf.seek(0)
    ckpt = torch.load(buf)
    resumed.load_state_dict(ckpt['model'])
    link_cbn_layers(resumed, lambda: resumed(torch.randn(2, 3, 6, 6)))  # tracing leaves no trace
    opt2 = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ckpt['opt'])
    assert resumed[1].grid_phase == 1  # re-read from iter_count on load
    continued = train_steps(resumed, opt2, batches[5:])
    for a, b in zip(uninterrupted, continued):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(net.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not any('conv' in k for k in resumed[1].state_dict())


def test_bn_checkpoint_loads_into_cbn_without_missing_keys():
    bn = nn.BatchNorm2d(8)
    bn.running_mean.fill_(0.5)
    cbn = CBN(8)
    result = cbn.load_state_dict(bn.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(cbn.running_mean, bn.running_mean)


@pytest.mark.parametrize('metadata', ['version 2', 'none'])
def test_checkpoint_with_pre_v3_buffer_names_loads_and_continues_identically(metadata):
    """Before version 3 ``win_dmu_dot_w`` / ``win_dnu_dot_w`` were ``win_dmu_w`` / ``win_dnu_w``:
    such a checkpoint (with its version-2 metadata, or with none) loads without missing or
    unexpected keys and the run continues bit for bit."""
    torch.manual_seed(0)
    batches = [torch.randn(2, 3, 6, 6) for _ in range(8)]
    net = conv_cbn(buffer_num=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    train_steps(net, opt, batches[:5])  # the weights moved: the compensation is not zero
    state = net.state_dict()
    assert state._metadata['1']['version'] == 3
    old = OrderedDict((re.sub(r'win_(dmu|dnu)_dot_w$', r'win_\1_w', key), value.clone())
                      for key, value in state.items())
    assert {'1.win_dmu_w', '1.win_dnu_w'} <= set(old) and '1.win_dmu_dot_w' not in old
    if metadata == 'version 2':
        old._metadata = copy.deepcopy(state._metadata)
        old._metadata['1']['version'] = 2

    resumed = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), CBN(8, buffer_num=3))
    result = resumed.load_state_dict(old)
    assert not result.missing_keys and not result.unexpected_keys
    assert '1.win_dmu_w' in old  # the caller's dict is left as it was
    for key, value in state.items():
        assert torch.equal(resumed.state_dict()[key], value), key
    resumed[1].link_conv(resumed[0])
    continued = train_steps(resumed, torch.optim.SGD(resumed.parameters(), lr=0.1), batches[5:])
    uninterrupted = train_steps(net, opt, batches[5:])
    assert net[1].compensating and resumed[1].compensating
    for a, b in zip(uninterrupted, continued):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_link_survives_to_and_deepcopy_starts_unlinked():
    torch.manual_seed(0)
    net = conv_cbn(buffer_num=2)
    net.to(torch.float64)
    assert net[1].conv is net[0]
    for _ in range(3):
        out = net(torch.randn(2, 3, 5, 5, dtype=torch.float64))
    assert net[1].compensating and out.dtype == torch.float64
    clone = copy.deepcopy(net)
    assert clone[1].conv is None
    clone(torch.randn(2, 3, 5, 5, dtype=torch.float64))
    assert not clone[1].compensating
    net(torch.randn(2, 3, 5, 5, dtype=torch.float64))
    assert net[1].compensating


class _Shared(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.fed_by_conv = CBN(4)
        self.fed_by_op = CBN(4)
        self.shared = CBN(4)
        self.unused = CBN(4)

    def forward(self, x):
        y = self.conv(x)
        a = self.fed_by_conv(y)
        b = self.fed_by_op(y * 2)
        return a + b + self.shared(a) + self.shared(b)


def test_link_skips_and_warns_about_other_inputs():
    from mmengine.logging import MMLogger
    model = _Shared()
    logger = MMLogger.get_instance('test_cbn_link')
    messages = []
    logger.log = lambda level, msg, *a, **k: messages.append(msg)
    report = link_cbn_layers(model, lambda: model(torch.randn(2, 3, 4, 4)), logger=logger)
    assert report.linked == {'fed_by_conv': 'conv'}
    assert set(report.skipped) == {'fed_by_op', 'shared', 'unused'}
    assert 'called 2 times' in report.skipped['shared']
    assert len(messages) == 3 and all('stays a plain BN' in m for m in messages)
    assert any("'fed_by_op'" in m for m in messages)


@pytest.mark.parametrize('scope', ['mmdet', 'mmpose'])
def test_build_norm_layer_in_downstream_scopes(scope):
    from mmcv.cnn import build_norm_layer
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        name, layer = build_norm_layer(dict(type='CBN', buffer_num=2), 16, postfix=1)
    assert name == 'cbn1' and isinstance(layer, CBN) and layer.buffer_num == 2


def test_norm_eval_freezes_cbn_in_mmdet_resnet():
    from mmdet.models.backbones import ResNet
    model = ResNet(depth=18, norm_cfg=dict(type='CBN'), norm_eval=True)
    cbns = [m for m in model.modules() if isinstance(m, CBN)]
    assert cbns and hasattr(model, 'cbn1')
    model.train()
    assert all(not m.training for m in cbns)
    before = [m.running_mean.clone() for m in cbns]
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, cbns))
    model = ResNet(depth=18, norm_cfg=dict(type='CBN'), norm_eval=False)
    model.train()
    report = link_cbn_layers(model, lambda: model(torch.randn(2, 3, 32, 32)))
    assert report.total == len(cbns) and len(report.linked) == len(cbns)


def test_optimizer_norm_decay_applies_to_cbn():
    from mmengine.optim import build_optim_wrapper
    model = nn.Sequential(nn.Conv2d(3, 4, 1), CBN(4))
    wrapper = build_optim_wrapper(
        model, dict(optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4),
                    paramwise_cfg=dict(norm_decay_mult=0.0)))
    decays = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    assert decays[id(model[1].weight)] == 0.0 and decays[id(model[0].weight)] == 1e-4


# --------------------------------------------------------------------------- configs
#: the norm a config file's name announces -> its ``norm_cfg`` type
NORM_TYPES = {'gn': 'GN', 'syncbn': 'SyncBN', 'bn': 'BN', 'cbn': 'CBN'}
#: a Table-3 config name: detector depth and neck, or the pose model's neck; then the norm
TABLE3_NAME = re.compile(
    r'^(?:faster-rcnn_r(?P<depth>50|101)_(?P<neck>fpn|cffm)|pgnet_res50_(?P<pose_neck>cffm))'
    r'_(?P<norm>gn|syncbn|cbn)_')


def _hook_types(cfg) -> list:
    return [hook['type'] for hook in cfg.get('custom_hooks', None) or []]


def test_table3_configs_thread_the_norm_their_name_says():
    """Every cell of Table 3 has a config, and each puts the norm of its file name into the neck
    (and the 4conv1fc box head of a detector), leaves the backbone's BN alone and links CBN."""
    from mmengine.config import Config
    cells = set()
    for path in CBN_CONFIGS:
        match = TABLE3_NAME.match(osp.basename(path))
        if match is None:  # the small demo detector, ablated by configs/ablations/
            continue
        cfg, norm = Config.fromfile(path), match['norm']
        name, expected = osp.basename(path), NORM_TYPES[norm]
        model = cfg.model
        assert model.neck.type == {'fpn': 'FPN', 'cffm': 'CFFM'}[match['neck'] or 'cffm'], name
        assert model.neck.norm_cfg.type == expected, name
        assert model.backbone.get('norm_cfg', dict(type='BN'))['type'] == 'BN', name
        if match['depth']:
            head = model.roi_head.bbox_head
            assert head.type == 'Shared4Conv1FCBBoxHead' and head.norm_cfg.type == expected, name
            assert model.backbone.depth == int(match['depth']) and model.backbone.norm_eval, name
        assert ('CBNHook' in _hook_types(cfg)) == (norm == 'cbn'), name
        if norm == 'cbn':
            assert model.neck.norm_cfg.buffer_num == 3, name
        cells.add((match['depth'], match['neck'] or match['pose_neck'], norm))
    grid = {(depth, neck, norm) for depth, neck in [('50', 'fpn'), ('101', 'fpn'), ('50', 'cffm'),
                                                    (None, 'cffm')]
            for norm in ('gn', 'syncbn', 'cbn')}
    assert cells == grid


def _ablation_configs(spec_file: str) -> dict:
    """The merged config of every variant of an ablation spec in ``configs/ablations``."""
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis'))
    import ablate
    spec = ablate.load_spec(osp.join(REPO_ROOT, 'configs', 'ablations', spec_file))
    return {name: ablate.variant_config(spec, name) for name in spec.variants}


@pytest.mark.parametrize('spec_file', [
    'pgnet_demo_norms_b16.py', 'pgnet_demo_norms_b4.py', 'pgnet_demo_norms_b2.py'])
def test_pose_norm_ablation_variants_use_the_norm_they_name(spec_file):
    """Variants BN / GN / CBN / CBN-diff: that norm in backbone and neck, CBN linked by CBNHook
    with a window of ``16 / batch - 1`` past iterations (at least 1)."""
    configs = _ablation_configs(spec_file)
    assert set(configs) == {'BN', 'GN', 'CBN', 'CBN-diff'}
    for name, cfg in configs.items():
        expected = NORM_TYPES[name.split('-')[0].lower()]
        for part in (cfg.model.backbone, cfg.model.neck):
            norm_cfg = part.get('norm_cfg', None) or dict(type='BN')
            assert norm_cfg['type'] == expected, (name, part.type)
            if expected == 'CBN':
                batch = cfg.train_dataloader.batch_size
                assert norm_cfg['buffer_num'] == max(1, 16 // batch - 1), (name, batch)
                assert norm_cfg.get('differentiable_compensation', False) == (name == 'CBN-diff')
        assert ('CBNHook' in _hook_types(cfg)) == (expected == 'CBN'), name


def test_detector_table3_ablation_variants_use_the_neck_and_norm_they_name():
    """Variants ``<neck>_<norm>``: that neck, that norm in backbone, neck and box head (the
    loss variants keep the base config's GN); CBN linked by CBNHook."""
    configs = _ablation_configs('faster-rcnn_demo_table3.py')
    norm_variants = [name for name in configs if re.match(r'^(fpn|cffm)_(gn|bn|cbn)$', name)]
    assert len(norm_variants) == 6
    for name, cfg in configs.items():
        neck, norm = name.split('_') if name in norm_variants else ('fpn', 'gn')
        model, expected = cfg.model, NORM_TYPES[norm]
        assert model.neck.type == neck.upper(), name
        for part in (model.backbone, model.neck, model.roi_head.bbox_head):
            assert part.norm_cfg.type == expected, (name, part.type)
        assert ('CBNHook' in _hook_types(cfg)) == (norm == 'cbn'), name


def _build(config):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from mmpgnet.utils.launch import resolve_config_path
    cfg = Config.fromfile(resolve_config_path(config))
    cfg.model.backbone.init_cfg = None
    scope = cfg.get('default_scope')
    with DefaultScope.overwrite_default_scope(scope):
        if scope == 'mmdet':
            from mmdet.registry import MODELS
        else:
            from mmpose.registry import MODELS
        model = MODELS.build(cfg.model)
    return cfg, model


@pytest.mark.slow
@pytest.mark.parametrize('config', CBN_CONFIGS, ids=osp.basename)
def test_table3_config_builds_and_links(config):
    cfg, model = _build(config)
    norm = cfg.norm_cfg['type']
    neck_norms = [m for m in model.neck.modules() if isinstance(m, (_BatchNorm, nn.GroupNorm))]
    assert neck_norms
    expected = {'GN': nn.GroupNorm, 'SyncBN': nn.SyncBatchNorm, 'CBN': CBN}[norm]
    assert all(isinstance(m, expected) for m in neck_norms)
    if 'faster-rcnn' in config:
        head = model.roi_head.bbox_head
        assert type(head).__name__ == 'Shared4Conv1FCBBoxHead'
        assert all(isinstance(c.norm, expected) for c in head.shared_convs)
    if norm == 'CBN':
        assert any(h['type'] == 'CBNHook' for h in cfg.custom_hooks)
        if 'faster-rcnn' in config:
            from mmdet.structures import DetDataSample
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=dict(img_shape=(128, 128), pad_shape=(128, 128),
                                                 scale_factor=(1.0, 1.0)))
            sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 10., 80., 90.]]),
                                               labels=torch.tensor([0]))
            inputs = torch.randn(2, 3, 128, 128)
            model.train()
            report = link_cbn_layers(model, lambda: model.loss(inputs, [sample, sample]))
            assert len(report.linked) == report.total, report.skipped


@pytest.mark.slow
@pytest.mark.parametrize('norm', ['gn', 'syncbn', 'cbn'])
def test_table3_norm_trains_with_train_tool(norm, synthetic_coco, tmp_path):
    from helpers.configs import smoke_config
    from helpers.tool_runs import run_tool
    config = osp.join(REPO_ROOT, 'configs', 'cbn', f'faster-rcnn_r50_fpn_{norm}_1x_coco.py')
    extra = dict(custom_hooks=[dict(type='CBNHook', burnin_iters=1)]) if norm == 'cbn' else None
    smoke = smoke_config(config, synthetic_coco, str(tmp_path / 'run'), max_epochs=2,
                         batch_size=2, det_scale=(160, 128), extra=extra)
    out = run_tool(['train.py', smoke, '--work-dir', str(tmp_path / 'run')], timeout=900)
    assert 'Epoch(train)' in out and 'nan' not in out.split('Epoch(train)')[-1].lower()
    if norm == 'cbn':
        # FPN: 4 lateral + 4 output convs; Shared4Conv1FCBBoxHead: 4 convs
        assert 'CBNHook: 12/12 CBN layers compensated across iterations' in out, out[-3000:]
        active = [float(v) for v in re.findall(r'cbn_compensating: ([\d.]+)', out)]
        assert active and active[0] == 0 and active[-1] > 0, active


def test_cbn_hook_links_and_logs_in_runner(tmp_path):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.norm = CBN(4, buffer_num=2)
            self.other = CBN(4)

        def forward(self, inputs, labels=None, mode='tensor'):
            x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
            out = self.norm(self.conv(x))
            out = self.other(out.relu())
            return dict(loss=out.pow(2).mean()) if mode == 'loss' else out

    data = [dict(inputs=torch.randn(3, 6, 6)) for _ in range(8)]
    runner = Runner(
        model=Toy(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        custom_hooks=[dict(type='CBNHook', burnin_epochs=1)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        default_scope='mmengine')
    runner.train()
    assert runner.message_hub.get_info('cbn/linked_layers') == 1
    model = runner.model
    assert model.norm.conv is model.conv and model.other.conv is None
    assert model.norm.burnin_iters == 4 and int(model.norm.iter_count) == 8
    assert runner.message_hub.get_scalar('train/cbn_compensating').current() == 1


@pytest.mark.slow
def test_benchmark_norms_tool(tmp_path):
    """The norm benchmark runs each variant in its own process and writes ratios and a plot."""
    import importlib.util
    import json
    path = osp.join(REPO_ROOT, 'tools', 'analysis', 'benchmark_norms.py')
    spec = importlib.util.spec_from_file_location('benchmark_norms', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--variants', 'BN', 'CBN-k3', '--iters', '1', '--warmup', '2', '--repeats', '1',
               '--batch-size', '2', '--input-size', '128', '96', '--device', 'cpu',
               '--out', str(tmp_path)])
    rows = {r['variant']: r for r in json.load(open(tmp_path / 'benchmark_norms.json'))['rows']}
    assert set(rows) == {'BN', 'CBN-k3'}
    assert rows['BN']['linked'] == 0
    assert rows['CBN-k3']['linked'] == 53 and rows['CBN-k3']['skipped'] == 0  # every R50 norm
    for row in rows.values():
        assert row['ms'] > 0 and row['peak_mib'] > 100 and torch.isfinite(torch.tensor(row['loss']))
    assert rows['BN']['loss'] != rows['CBN-k3']['loss']  # CBN really normalised differently
    assert osp.getsize(tmp_path / 'benchmark_norms.png') > 1000
    table = tool.format_table(list(rows.values()))
    assert '| CBN-k3 |' in table and 'time / BN' in table


def test_cbn_small_batch_tool_runs_seeds_resumes_and_summarises(tmp_path, monkeypatch):
    import sys
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis'))
    import cbn_small_batch
    out = str(tmp_path / 'study')
    argv = ['--batch-sizes', '4', '--norms', 'BN', 'CBN', 'CBN-diff-window', '--seeds', '0', '1',
            '--epochs', '2', '--train-size', '32', '--test-size', '32', '--out', out]
    summary = cbn_small_batch.main(argv)
    records = cbn_small_batch.load_records(osp.join(out, 'results.jsonl'))
    assert len(records) == 6 and {r['norm'] for r in records} == {'BN', 'CBN', 'CBN-diff-window'}
    by_run = {(r['norm'], r['seed']): r for r in records}
    # seeds change the run; the CBN options change CBN's (burn-in: the first of two epochs)
    assert by_run[('BN', 0)]['train_loss'] != by_run[('BN', 1)]['train_loss']
    assert by_run[('CBN', 0)]['train_loss'] != by_run[('CBN-diff-window', 0)]['train_loss']
    assert all(0 < r['running_var_ratio'] < 10 for r in records)
    rows = {r['variant']: r for r in summary[4]}
    assert rows['BN']['n'] == 2 and rows['CBN']['diffs'] == {
        s: by_run[('CBN', s)]['test_acc'] - by_run[('BN', s)]['test_acc'] for s in (0, 1)}
    text = open(osp.join(out, 'summary.md')).read()
    assert '### batch 4' in text and '| CBN-diff-window | 2 |' in text
    assert osp.getsize(osp.join(out, 'summary.png')) > 10_000
    # a second invocation trains nothing; another epoch count is another run
    monkeypatch.setattr(cbn_small_batch, 'train_eval', lambda *a: pytest.fail('trained again'))
    cbn_small_batch.main(argv)
    with pytest.raises(pytest.fail.Exception, match='trained again'):
        cbn_small_batch.main(argv[:-2] + ['--epochs', '3', '--out', out])


@pytest.mark.filterwarnings(r'ignore:`torch\.jit\.trace(_method)?` is deprecated:FutureWarning')
def test_eval_cbn_traces_with_torch_jit():
    """FLOP counters and ONNX export trace the model; a linked CBN in eval mode traces as BN."""
    net = conv_cbn(buffer_num=2)
    for _ in range(3):
        net(torch.randn(2, 3, 6, 6))
    net.eval()
    x = torch.randn(1, 3, 6, 6)
    traced = torch.jit.trace(net, (x, ))
    torch.testing.assert_close(traced(x), net(x))


def test_running_var_ratio_against_hand_set_statistics():
    import sys
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis'))
    from cbn_small_batch import running_var_ratio
    torch.manual_seed(0)
    images = torch.randn(300, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 1
    bn = nn.BatchNorm2d(3).eval()
    bn.running_var.copy_(images.var((0, 2, 3), unbiased=False))
    assert running_var_ratio(nn.Sequential(bn), images) == pytest.approx(1.0, rel=1e-5)
    bn.running_var.mul_(torch.tensor([0.5, 1.0, 1.5]))  # per channel 0.5, 1, 1.5: mean 1
    bn.running_var[0] *= 0.5
    assert running_var_ratio(nn.Sequential(bn), images) == pytest.approx(
        (0.25 + 1.0 + 1.5) / 3, rel=1e-5)
    assert running_var_ratio(nn.Sequential(nn.GroupNorm(1, 3)), images) is None
