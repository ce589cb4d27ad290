"""Hook that links CBN layers to their convs before training and reports their state."""
from typing import Any, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from mmpgnet.models.norms import link_cbn_layers, named_cbn_layers
from mmpgnet.registry import register_hook


@register_hook()
class CBNHook(Hook):
    """Link every :class:`~mmpgnet.models.norms.CBN` to the conv that feeds it.

    Before training it traces one forward pass on a batch of the training dataloader (no
    gradients, buffers restored) to find, for each CBN, the module whose output it receives, and
    links it when that is a supported conv; other CBN layers get a warning naming them and stay
    plain BN. The number of compensated layers is logged and put in the message hub as
    ``cbn/linked_layers``; after each iteration the number of layers that used past iterations is
    logged as the scalar ``train/cbn_compensating``. The CBN layers count their own training
    forwards (a checkpointed buffer), so the burn-in survives a resume.

    Args:
        burnin_epochs (float, optional): if given, sets every CBN's ``burnin_iters`` to this many
            epochs of the training dataloader (``round(burnin_epochs * len(dataloader))``),
            overriding ``norm_cfg``. Defaults to None.
        burnin_iters (int, optional): if given, sets every CBN's ``burnin_iters``. Defaults to
            None. At most one of the two may be given.
    """

    priority = 'NORMAL'

    def __init__(self,
                 burnin_epochs: Optional[float] = None,
                 burnin_iters: Optional[int] = None) -> None:
        if burnin_epochs is not None and burnin_iters is not None:
            raise ValueError('give burnin_epochs or burnin_iters, not both')
        if burnin_epochs is not None and burnin_epochs < 0:
            raise ValueError(f'burnin_epochs must be >= 0, got {burnin_epochs}')
        if burnin_iters is not None and (not isinstance(burnin_iters, int) or burnin_iters < 0):
            raise ValueError(f'burnin_iters must be an int >= 0, got {burnin_iters!r}')
        self.burnin_epochs = burnin_epochs
        self.burnin_iters = burnin_iters
        self._cbns: dict = {}

    @staticmethod
    def _unwrap(model: nn.Module) -> nn.Module:
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner: Any) -> None:
        """Set the burn-in, trace one batch and link the CBN layers.

        Args:
            runner (Runner): the MMEngine runner.
        """
        model = self._unwrap(runner.model)
        self._cbns = named_cbn_layers(model)
        if not self._cbns:
            runner.logger.warning('CBNHook: the model has no CBN layer')
            runner.message_hub.update_info('cbn/linked_layers', 0)
            return
        burnin = self._burnin(runner)
        if burnin is not None:
            for cbn in self._cbns.values():
                cbn.burnin_iters = burnin
        data_batch = next(iter(runner.train_dataloader))

        def run_forward() -> Any:
            data = model.data_preprocessor(data_batch, False)
            if isinstance(data, dict):
                return model(**data, mode='loss')
            return model(*data, mode='loss')

        report = link_cbn_layers(model, run_forward, logger=runner.logger)
        runner.message_hub.update_info('cbn/linked_layers', len(report.linked))
        burnins = sorted({cbn.burnin_iters for cbn in self._cbns.values()})
        runner.logger.info(
            f'CBNHook: {len(report.linked)}/{report.total} CBN layers compensated across '
            f'iterations (burn-in {burnins} iters); {len(report.skipped)} stay plain BN')

    def _burnin(self, runner: Any) -> Optional[int]:
        """Burn-in in iterations from the hook's arguments, or ``None`` to keep norm_cfg's."""
        if self.burnin_iters is not None:
            return self.burnin_iters
        if self.burnin_epochs is not None:
            return int(round(self.burnin_epochs * len(runner.train_dataloader)))
        return None

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        """Log how many CBN layers used past iterations in this iteration.

        Args:
            runner (Runner): the MMEngine runner.
            batch_idx (int): index of the batch.
            data_batch (Any): the batch.
            outputs (Any): the model outputs.
        """
        if self._cbns:
            # a device tensor: MMEngine reads it with the other logged scalars (one sync per
            # iteration for all of them, not one per layer)
            active = sum(cbn.compensating.to(torch.int32) for cbn in self._cbns.values())
            runner.message_hub.update_scalar('train/cbn_compensating', active)
