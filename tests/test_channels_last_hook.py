"""ChannelsLastHook: the model and its batches in NHWC, with the same training result."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmpgnet.engine.hooks.channels_last_hook import ChannelsLastHook


class _Images(Dataset):

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 12, 10, generator=g)
        self.y = torch.randn(n, 2, 6, 5, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.x[i], targets=self.y[i])


class _ConvNet(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 2, 1))
        self.input_formats = []

    def forward(self, inputs, targets=None, mode='tensor'):
        self.input_formats.append(inputs.is_contiguous(memory_format=torch.channels_last))
        out = self.body(inputs)
        if mode == 'loss':
            return dict(loss=F.mse_loss(out, targets))
        return out


def _train(tmp_path, hooks):
    torch.manual_seed(0)
    model = _ConvNet()
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=_Images(), sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate'), batch_size=4,
                              num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=6),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        custom_hooks=hooks,
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=100)),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        experiment_name=f'cl{len(hooks)}')
    runner.train()
    return model


def test_channels_last_trains_the_same(tmp_path):
    plain = _train(tmp_path / 'plain', [])
    nhwc = _train(tmp_path / 'nhwc', [dict(type='ChannelsLastHook')])
    assert not any(plain.input_formats) and all(nhwc.input_formats)
    conv_weight = nhwc.body[0].weight
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv_weight.is_contiguous()
    for (name, a), b in zip(plain.state_dict().items(), nhwc.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # the input conversion is removed after the run; a NHWC checkpoint loads into a plain model
    assert not nhwc._forward_pre_hooks
    fresh = _ConvNet()
    fresh.load_state_dict(nhwc.state_dict())
    assert fresh.body[0].weight.is_contiguous()


def test_disabled_and_bad_argument(tmp_path):
    off = _train(tmp_path / 'off', [dict(type='ChannelsLastHook', enabled=False)])
    assert not any(off.input_formats)
    with pytest.raises(TypeError, match='enabled must be a bool'):
        ChannelsLastHook(enabled='yes')
