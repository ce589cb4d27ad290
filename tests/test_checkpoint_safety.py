"""torch.load(weights_only=True) reads MMEngine checkpoints, and still refuses foreign code."""
import io
import pickle

import numpy as np
import pytest
import torch
from helpers.torch_features import needs_weights_only_default
from mmengine.logging import HistoryBuffer, MessageHub

import mmpgnet  # noqa: F401  (installs the allowlist)
from mmpgnet.utils.checkpoint_safety import restricted_getattr


def test_message_hub_state_round_trips_under_weights_only():
    hub = MessageHub.get_instance('mmpgnet_test_hub')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/loss', np.float64(0.25))
    hub.update_info('epoch', np.int64(3))
    ckpt = dict(message_hub=hub.state_dict(), meta=dict(sigmas=np.ones(17, np.float32)),
                state_dict=dict(w=torch.ones(2)))
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    loaded = torch.load(buf)  # torch's default: weights_only=True
    scalars = loaded['message_hub']['log_scalars']
    assert isinstance(scalars['train/loss'], HistoryBuffer)
    assert scalars['train/loss'].mean() == pytest.approx(0.375)
    assert loaded['message_hub']['runtime_info']['epoch'] == 3
    np.testing.assert_array_equal(loaded['meta']['sigmas'], np.ones(17, np.float32))


class _Sneaky:
    """Pickles as getattr(HistoryBuffer, '__init__'): an attribute outside the allowlist."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


@needs_weights_only_default
def test_other_getattr_targets_are_refused():
    buf = io.BytesIO()
    torch.save({'x': _Sneaky()}, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match='does not allow'):
        torch.load(buf)
    assert restricted_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError):
        restricted_getattr(np, 'load')


@needs_weights_only_default
def test_arbitrary_classes_still_refused():
    buf = io.BytesIO()
    torch.save({'x': _Plain()}, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
        torch.load(buf)


class _Plain:
    pass
