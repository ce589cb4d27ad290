"""Find, by tracing one forward pass, the conv that feeds each CBN layer, and link them.

The trace records, with forward hooks, which module produced each tensor (the innermost one when
a wrapper returns its child's output unchanged) and which tensor each CBN receives. It runs under
``torch.no_grad`` and restores every buffer and train/eval flag afterwards, so it leaves no trace
in running statistics or CBN windows.
"""
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from .cbn import CBN
from .cbn_conv_support import unsupported_conv_reason


@dataclass
class CBNLinkReport:
    """Outcome of :func:`link_cbn_layers`.

    Attributes:
        linked (dict[str, str]): CBN name -> name of the conv it is linked to.
        skipped (dict[str, str]): CBN name -> why it stays a plain BN.
    """

    linked: Dict[str, str] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """int: number of CBN layers seen."""
        return len(self.linked) + len(self.skipped)


def named_cbn_layers(model: nn.Module) -> Dict[str, CBN]:
    """Return the CBN layers of ``model`` by qualified name.

    Args:
        model (nn.Module): the model.

    Returns:
        dict[str, CBN]: name -> layer, in module order.
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, CBN)}


def trace_cbn_producers(model: nn.Module,
                        run_forward: Callable[[], Any]) -> Dict[str, Tuple[Optional[str], int]]:
    """Run ``run_forward`` once and report, per CBN, the module that produced its input.

    Args:
        model (nn.Module): the model holding the CBN layers.
        run_forward (Callable[[], Any]): runs one forward pass of ``model`` (train mode is set
            here; gradients are disabled).

    Returns:
        dict[str, tuple[str | None, int]]: CBN name -> (producer module name, or ``None`` when its
        input was made by a functional op / came from outside, and the number of calls).
    """
    names = {m: name for name, m in model.named_modules()}
    cbns = named_cbn_layers(model)
    producers: Dict[int, Tuple[weakref.ReferenceType, str]] = {}
    seen: Dict[str, List[Optional[str]]] = {name: [] for name in cbns}

    def on_output(module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        if isinstance(output, Tensor) and id(output) not in producers:
            producers[id(output)] = (weakref.ref(output), names[module])
        elif isinstance(output, Tensor):
            ref, _ = producers[id(output)]
            if ref() is not output:  # a dead tensor's id was reused
                producers[id(output)] = (weakref.ref(output), names[module])

    def on_cbn_input(module: nn.Module, args: Tuple[Any, ...]) -> None:
        x = args[0] if args else None
        entry = producers.get(id(x)) if isinstance(x, Tensor) else None
        producer = entry[1] if entry is not None and entry[0]() is x else None
        seen[names[module]].append(producer)

    handles = [m.register_forward_hook(on_output) for m in names if m is not model]
    handles += [m.register_forward_pre_hook(on_cbn_input) for m in cbns.values()]
    training = {m: m.training for m in names}
    buffers = [(buf, buf.clone()) for buf in model.buffers()]
    grid_phases = {cbn: cbn.grid_phase for cbn in cbns.values()}
    try:
        model.train()
        with torch.no_grad():
            run_forward()
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in training.items():
            m.training = flag
        for cbn, phase in grid_phases.items():
            cbn.grid_phase = phase
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
    return {name: (calls[0] if calls else None, len(calls)) for name, calls in seen.items()}


def link_cbn_layers(model: nn.Module,
                    run_forward: Callable[[], Any],
                    logger: Any = 'current') -> CBNLinkReport:
    """Link every CBN of ``model`` to the conv that feeds it; warn about the others.

    A CBN stays a plain BN (with a warning naming it) when its input is not the output of a
    supported conv, when it is not called in the traced forward, or when it is called more than
    once per forward (a module shared across feature levels would mix their statistics).

    Args:
        model (nn.Module): the model (unwrapped).
        run_forward (Callable[[], Any]): runs one training-mode forward pass of ``model``.
        logger (Any): MMEngine logger or ``'current'`` for the warnings.

    Returns:
        CBNLinkReport: which layers were linked and why others were not.
    """
    report = CBNLinkReport()
    cbns = named_cbn_layers(model)
    if not cbns:
        return report
    modules = dict(model.named_modules())
    for name, (producer, calls) in trace_cbn_producers(model, run_forward).items():
        cbn = cbns[name]
        cbn.unlink_conv()
        if calls == 0:
            reason = 'it is not called in a training forward'
        elif calls > 1:
            reason = f'it is called {calls} times per forward (shared module)'
        elif producer is None:
            reason = 'its input is not the output of a module (functional op or model input)'
        else:
            reason = unsupported_conv_reason(modules[producer])
            if reason is None and modules[producer].out_channels != cbn.num_features:
                reason = f'{producer} has {modules[producer].out_channels} output channels'
        if reason is None:
            cbn.link_conv(modules[producer])
            report.linked[name] = producer
        else:
            if producer is not None and calls == 1:
                reason = f'{reason} ({producer!r})'
            report.skipped[name] = reason
            print_log(f'CBN layer {name!r} stays a plain BN: {reason}', logger=logger,
                      level=logging.WARNING)
    return report
