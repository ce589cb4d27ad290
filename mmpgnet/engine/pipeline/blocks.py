"""A model as an ordered list of blocks that pass named tensors: what pipeline stages are cut from.

A :class:`PipelineBlock` reads some named tensors of a *state* and writes others. A stage is a
contiguous run of blocks (:class:`StageModule`); the tensors that cross a cut are the names that
are alive there (:func:`live_keys`), so backbone outputs that the neck needs later, guidance
predictions that the loss needs, and the targets all travel forward as extra tensors.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

State = Dict[str, Tensor]


@dataclass
class PipelineBlock:
    """One indivisible piece of a model.

    Args:
        name (str): unique name (e.g. ``'backbone.layer3.0'``), used by ``split_points``.
        fn (Callable[[State], State]): computes the outputs from a state holding the inputs.
        inputs (tuple[str]): names it reads.
        outputs (tuple[str]): names it writes.
        modules (list[nn.Module]): the modules whose parameters it uses (the stage owns them).
        aliases (dict[str, str]): output names that are the same tensor as another output
            (``{'c1': 'x'}``); a cut sends such a tensor once and the next stage restores the
            alias, so its gradient is accumulated in one place, in the same order as in the
            unsplit model.
    """
    name: str
    fn: Callable[[State], State]
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    modules: List[nn.Module] = field(default_factory=list)
    aliases: Dict[str, str] = field(default_factory=dict)


@dataclass
class BlockGraph:
    """The blocks of a model, the names the first stage receives and the names the loss reads.

    Args:
        blocks (list[PipelineBlock]): in execution order.
        input_keys (tuple[str]): names fed to the first stage (images, then targets).
        loss_keys (tuple[str]): names the loss function reads at the end of the last stage.
    """
    blocks: List[PipelineBlock]
    input_keys: Tuple[str, ...]
    loss_keys: Tuple[str, ...]

    @property
    def names(self) -> List[str]:
        """list[str]: block names in order."""
        return [b.name for b in self.blocks]

    def index(self, name: str) -> int:
        """Index of the block called ``name``.

        Raises:
            ValueError: naming the available blocks when there is none of that name.
        """
        names = self.names
        if name not in names:
            raise ValueError(f'split point {name!r} is not a block of this model; a split point '
                             'names the first block of a stage, one of: ' + ', '.join(names[1:]))
        return names.index(name)


def live_keys(graph: BlockGraph, cut: int) -> Tuple[str, ...]:
    """Names that must cross the boundary before block ``cut``.

    A name is alive at a cut if it was written before it (or is an input) and a block at or after
    the cut (or the loss) reads that version before anything after the cut rewrites it.

    Args:
        graph (BlockGraph): the model's blocks.
        cut (int): index of the first block after the boundary (``len(blocks)``: the loss).

    Returns:
        tuple[str]: the names, in order of first definition (deterministic on every rank).
    """
    defined: List[str] = list(graph.input_keys)
    for block in graph.blocks[:cut]:
        defined += [k for k in block.outputs if k not in defined]
    needed, written = [], set()
    readers = [(b.inputs, b.outputs) for b in graph.blocks[cut:]] + [(graph.loss_keys, ())]
    for inputs, outputs in readers:
        needed += [k for k in inputs if k not in written and k not in needed]
        written.update(outputs)
    missing = [k for k in needed if k not in defined]
    if missing:
        raise ValueError(f'blocks after cut {cut} read {missing}, which nothing writes before')
    return tuple(k for k in defined if k in needed)


def cut_aliases(graph: BlockGraph, cut: int) -> Dict[str, str]:
    """Live names at a cut that are aliases of another live name (sent once, restored after).

    Args:
        graph (BlockGraph): the model's blocks.
        cut (int): index of the first block after the boundary.

    Returns:
        dict[str, str]: alias name -> the live name that carries the same tensor.
    """
    live = live_keys(graph, cut)
    writer: Dict[str, int] = {}
    for idx, block in enumerate(graph.blocks[:cut]):
        for k in block.outputs:
            writer[k] = idx
    aliases = {}
    for alias in live:
        block_idx = writer.get(alias)
        if block_idx is None:
            continue
        source = graph.blocks[block_idx].aliases.get(alias)
        if source in live and writer.get(source) == block_idx:
            aliases[alias] = source
    return aliases


def sent_keys(graph: BlockGraph, cut: int) -> Tuple[str, ...]:
    """The names whose tensors cross a cut: :func:`live_keys` without aliases."""
    aliases = cut_aliases(graph, cut)
    return tuple(k for k in live_keys(graph, cut) if k not in aliases)


def _contiguous_grad(grad: Tensor) -> Tensor:
    """Gradient hook: plain (NCHW) memory, which the process group's send needs."""
    return grad.contiguous()


class StageModule(nn.Module):
    """A run of blocks as one module with tensor-tuple inputs and outputs (a pipeline stage).

    The modules of the blocks are registered as children (shared with the full model), so
    ``parameters()`` yields exactly this stage's parameters. ``train()``/``eval()`` do not
    touch the children: the full model's own ``train()`` (frozen stages, ``norm_eval``) governs
    their mode.

    Args:
        graph (BlockGraph): the model's blocks.
        start (int): first block index.
        end (int): one past the last block index.
    """

    def __init__(self, graph: BlockGraph, start: int, end: int) -> None:
        super().__init__()
        self.blocks = graph.blocks[start:end]
        self.block_names = [b.name for b in self.blocks]
        self.in_keys = sent_keys(graph, start) if start > 0 else tuple(graph.input_keys)
        self.in_aliases = cut_aliases(graph, start) if start > 0 else {}
        self.out_keys = sent_keys(graph, end)
        seen, mods = set(), []
        for block in self.blocks:
            for module in block.modules:
                if id(module) not in seen:
                    seen.add(id(module))
                    mods.append(module)
        self.owned = nn.ModuleList(mods)

    def train(self, mode: bool = True) -> 'StageModule':
        """Only record the mode; the full model sets its children's modes."""
        self.training = mode
        return self

    def forward(self, *tensors: Tensor) -> Tuple[Tensor, ...]:
        """Run the blocks.

        Args:
            *tensors (Tensor): the tensors named by ``in_keys``, in that order.

        Returns:
            tuple[Tensor]: the tensors named by ``out_keys``.
        """
        if len(tensors) != len(self.in_keys):
            raise ValueError(f'stage {self.block_names[0]}.. expects {len(self.in_keys)} tensors '
                             f'{self.in_keys}, got {len(tensors)}')
        if torch.is_grad_enabled():  # the gradients sent back to the previous stage, too
            for tensor in tensors:
                if tensor.requires_grad:
                    tensor.register_hook(_contiguous_grad)
        state = dict(zip(self.in_keys, tensors))
        state.update({alias: state[source] for alias, source in self.in_aliases.items()})
        for block in self.blocks:
            state.update(block.fn({k: state[k] for k in block.inputs}))
        # contiguous: the process group's send/recv needs plain memory (CFFM's maps may be NHWC)
        return tuple(state[k].contiguous() for k in self.out_keys)


def stage_ranges(num_blocks: int, cuts: Sequence[int]) -> List[Tuple[int, int]]:
    """``[start, end)`` block ranges of the stages for cut indices ``cuts``."""
    bounds = [0] + list(cuts) + [num_blocks]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
