"""The emoDARTS supernet: CNN cells and SeqNN cells of mixed ops, searched jointly in one graph.

Layout (shared with the discrete model, see `nas.ops.CellNetwork`): (B, 1, F, T) -> stem -> CNN
cells -> (B, T', C' * F') -> Linear to H -> SeqNN cells -> mean over time -> dropout -> Linear.

Architecture parameters live on the `Supernet` itself (`alpha_normal`, `alpha_reduce`,
`alpha_seq`, each (edges, ops) with a row per edge), the weights in `self.net`, so `weights()`
and `alphas()` are disjoint by construction. Edge rows are ordered node by node, and within a
node by input: (node i, input j) is row i * (i + 3) // 2 + j (inputs 0, 1 are the cell inputs,
j >= 2 is node j - 2).

Where the CNN cells differ from pt.darts, and why (memory and time; same function):
- `none` is never computed: its output is zero, so it only takes part in the softmax.
- Ops without parameters (pools + BN without affine, identity) compute the same function of a
  state on every edge leaving it, so they run once per state instead of once per edge; every
  op with parameters starts with a ReLU, which likewise runs once per state.
- Each op's architecture weight is its final BN's scale (`weighted_batch_norm`), which saves
  the copy of every op output that a separate product would keep for backward.
- The dilated convs and FactorizedReduce read the polyphase components of their input
  (`nas.ops.cnn.Polyphase`); each state is split once for all of them instead of once per op.
- `Supernet(recompute=...)` / `recompute_cells=...` recompute parts of the forward in backward
  (activation checkpointing) for less memory; BN running statistics are not updated twice.
- Partial channels (PC-DARTS, K = `partial_channels` > 1): only the first C/K channels of a
  state go through the ops of its edges; the other channels bypass them (max-pooled 2x2 on
  stride-2 edges), are summed over the node's inputs, concatenated after the mixed result,
  and a channel shuffle with K groups interleaves the two parts so that the next cell's ops see
  other channels. PC-DARTS' edge normalisation is not used. K = 1 is plain DARTS.

SeqNN cells (`nas.ops.seq.SeqCell`): nodes sum mixed edges over the earlier states, all
(B, T, H); the cell output concatenates the nodes along H and a Linear maps it back to H.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nas.darts.derive import derive_architecture, n_edges
from nas.errors import ConfigError
from nas.genome import EmoDartsArchitecture
from nas.ops import CellNetwork
from nas.ops.cnn import (
    CNN_OPS,
    DepthwiseSeparable,
    FactorizedReduce,
    Polyphase,
    ReLUConvBN,
    batch_norm,
    frozen_running_stats,
)
from nas.ops.seq import SEQ_OPS, SeqCell
from search_spaces.darts import EmoDartsSpace


def _has_parameters(name: str, stride: int) -> bool:
    return any(True for _ in CNN_OPS[name](2, stride, False).parameters())


def _weighted_sum(weights: torch.Tensor, index: list[int], outputs: list[torch.Tensor]) -> torch.Tensor:
    """sum_k weights[index[k]] * outputs[k]"""
    terms = [weights[k] * y for k, y in zip(index, outputs, strict=True)]
    return sum(terms[1:], start=terms[0])


def weighted_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """weight * bn(x) for a BN without affine parameters, the scalar weight passed as BN's scale:
    the same result, but BN's backward computes the weight's gradient from the input it keeps
    anyway, where a separate product would keep its own copy of the output (~20% of the memory)."""
    assert not bn.affine, "only BNs without affine parameters can take the architecture weight as scale"
    # A (C,) copy, not an expanded view: ATen's CPU BN backward reads the weight as a dense (C,) array
    # on some paths and, given the stride-0 view, returns wrong input gradients (torch 2.13; forward
    # and weight gradient unaffected). tests/darts/test_equivalence.py checks the gradients.
    return batch_norm(bn, x, weight.expand(x.shape[1]).contiguous())


class CnnMixedOp(nn.Module):
    """The ops with parameters of one CNN edge. The cell passes the ReLU of the state (computed
    once for all edges leaving it) instead of the state, and each op's final BN takes its
    architecture weight (`weighted_batch_norm`)."""

    def __init__(self, c: int, stride: int, names: list[str], index: list[int]) -> None:
        super().__init__()
        self.index = index  # column of each op in a row of architecture weights
        bodies, norms = [], []
        for name in names:
            layers = list(CNN_OPS[name](c, stride, False))
            assert isinstance(layers[0], nn.ReLU) and isinstance(layers[-1], nn.BatchNorm2d), (
                f"CNN op {name} has parameters but is not ReLU -> ... -> BN"
            )
            bodies.append(nn.Sequential(*layers[1:-1]))
            norms.append(layers[-1])
        self.bodies, self.norms = nn.ModuleList(bodies), nn.ModuleList(norms)
        # Ops whose first layer reads the polyphase components of the state (dilated convs, FactorizedReduce)
        self.reads_polyphase = [getattr(body[0], "reads_polyphase", False) for body in self.bodies]

    def forward(self, relu_x: torch.Tensor, weights: torch.Tensor, polyphase: Polyphase | None) -> torch.Tensor:
        """`polyphase`: `Polyphase.split` of `relu_x` for this edge's stride, when an op reads it."""
        terms = []
        for k, body, bn, reads in zip(self.index, self.bodies, self.norms, self.reads_polyphase, strict=True):
            if reads:
                assert polyphase is not None, "an op of this edge reads the polyphase split of its state"
                y = body[1:](body[0].forward_polyphase(polyphase))
            else:
                y = body(relu_x)
            terms.append(weighted_batch_norm(bn, y, weights[k]))
        return sum(terms[1:], start=terms[0])


class SeqMixedOp(nn.Module):
    """All SeqNN ops of one edge but `none`, weighted by the edge's row of architecture weights."""

    def __init__(self, hidden: int, op_names: tuple[str, ...]) -> None:
        super().__init__()
        self.index = [k for k, name in enumerate(op_names) if name != "none"]
        self.ops = nn.ModuleList(SEQ_OPS[op_names[k]](hidden) for k in self.index)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return _weighted_sum(weights, self.index, [op(x) for op in self.ops])


def _recompute_contexts() -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
    return nullcontext(), frozen_running_stats()  # the recomputation must not update BN statistics twice


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2)  # (B, groups, C / groups, H, W), swapped
    return x.reshape(b, c, h, w)


@dataclass(frozen=True)
class _SharedState:
    """What the edges leaving one cell state share (`SearchCell._share`)."""

    relu: torch.Tensor  # ReLU of the active channels, the input of every op with parameters
    polyphase: Polyphase | None  # split of `relu`, for the dilated convs and FactorizedReduce
    parameter_free: list[torch.Tensor]  # outputs of the ops without parameters
    bypass: torch.Tensor | None  # PC-DARTS: the channels that skip the ops


class SearchCell(nn.Module):
    """A CNN cell whose every edge mixes all candidate ops; output = concat of the intermediate nodes."""

    def __init__(
        self,
        nodes: int,
        c_pp: int,
        c_p: int,
        c: int,
        reduction_prev: bool,
        reduction: bool,
        op_names: tuple[str, ...],
        partial_channels: int,
    ) -> None:
        super().__init__()
        k = partial_channels
        if c % k or c // k < 2:
            raise ConfigError(
                f"partial_channels={k} must divide the {c} channels of a cell into parts of at least 2; "
                "use a smaller partial_channels or more init_channels"
            )
        self.reduction, self.nodes, self.partial_channels = reduction, nodes, k
        self.c_active = c // k
        self.out_channels = nodes * c
        # After a reduction cell, s0 is twice as large as s1: reduce it to line up.
        self.pre0 = (
            FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        )
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)

        # States 0 .. nodes feed edges (the last node feeds none); in a reduction cell the two
        # inputs are read with stride 2.
        self.strides = [2 if reduction and j < 2 else 1 for j in range(nodes + 1)]
        ops = [name for name in op_names if name != "none"]
        shared = {s: [n for n in ops if not _has_parameters(n, s)] for s in set(self.strides)}
        self.shared_index = {s: [op_names.index(n) for n in names] for s, names in shared.items()}
        self.shared = nn.ModuleList(
            nn.ModuleDict({n: CNN_OPS[n](self.c_active, s, False) for n in shared[s]}) for s in self.strides
        )
        self.mixed = nn.ModuleList()
        self.split_strides = set()  # strides whose edges have an op reading the polyphase split of their state
        for i in range(nodes):
            for j in range(i + 2):
                s = self.strides[j]
                names = [n for n in ops if n not in shared[s]]
                self.mixed.append(CnnMixedOp(self.c_active, s, names, [op_names.index(n) for n in names]))
                if any(self.mixed[-1].reads_polyphase):
                    self.split_strides.add(s)
        # PC-DARTS bypass of the channels that skip the ops; stride 2 keeps ceil(size / 2) like the ops
        self.bypass = nn.MaxPool2d(2, 2, ceil_mode=True) if reduction else nn.Identity()
        self.recompute = False  # see Supernet

    def _mixed(self, e: int, relu_x: torch.Tensor, weights: torch.Tensor, polyphase: Polyphase | None) -> torch.Tensor:
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(
                self.mixed[e], relu_x, weights, polyphase, use_reentrant=False, context_fn=_recompute_contexts
            )
        return self.mixed[e](relu_x, weights, polyphase)

    def _share(self, j: int, x: torch.Tensor) -> _SharedState:
        """What every edge leaving state j has in common: the ReLU of its active channels and its
        polyphase split, the outputs of the ops without parameters, and the bypassed channels."""
        active = x[:, : self.c_active] if self.partial_channels > 1 else x  # (B, C / K, H, W)
        shared = [op(active) for op in self.shared[j].values()]
        bypass = None
        if self.partial_channels > 1:
            bypass = self.bypass(x[:, self.c_active :]) if self.strides[j] == 2 else x[:, self.c_active :]
        relu_x = F.relu(active)
        polyphase = Polyphase.split(relu_x, self.strides[j]) if self.strides[j] in self.split_strides else None
        return _SharedState(relu_x, polyphase, shared, bypass)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        assert weights.shape[0] == len(self.mixed), f"{len(self.mixed)} edges, {weights.shape[0]} weight rows"
        states = [self.pre0(s0), self.pre1(s1)]
        shared = []  # _share(j) of each state j, computed once
        e = 0
        for i in range(self.nodes):
            while len(shared) < i + 2:  # node i reads states 0 .. i + 1
                shared.append(self._share(len(shared), states[len(shared)]))
            terms, bypassed = [], []
            for j in range(i + 2):
                state = shared[j]
                if state.parameter_free:
                    terms.append(_weighted_sum(weights[e], self.shared_index[self.strides[j]], state.parameter_free))
                if self.mixed[e].bodies:
                    terms.append(self._mixed(e, state.relu, weights[e], state.polyphase))
                if state.bypass is not None:
                    bypassed.append(state.bypass)
                e += 1
            node = sum(terms[1:], start=terms[0])  # (B, C / K, H', W')
            if bypassed:
                node = torch.cat([node, sum(bypassed[1:], start=bypassed[0])], dim=1)  # (B, C, H', W')
                node = channel_shuffle(node, self.partial_channels)
            states.append(node)
        return torch.cat(states[2:], dim=1)  # (B, nodes * C, H', W')


class Supernet(nn.Module):
    def __init__(
        self,
        space: EmoDartsSpace,
        input_shape: tuple[int, int, int],
        n_classes: int,
        *,
        recompute: bool = True,
        recompute_cells: int = 0,
    ) -> None:
        """Two ways of trading time for memory, both exact:
        `recompute`: backward recomputes depthwise conv outputs instead of keeping them
        (`DepthwiseSeparable`): ~30% less activation memory for a few % more time;
        `recompute_cells`: the first (widest) CNN cells keep only their states and recompute
        their mixed edges in backward: most of their memory, for one more forward of them."""
        super().__init__()
        self.space = space
        edges = n_edges(space.nodes)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(edges, len(space.cnn_ops)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(space.cnn_ops)))
        self.alpha_seq = nn.Parameter(1e-3 * torch.randn(edges, len(space.seq_ops))) if space.seq_cells else None

        def cnn_cell(c_pp: int, c_p: int, c: int, reduction_prev: bool, reduction: bool) -> SearchCell:
            return SearchCell(
                space.nodes, c_pp, c_p, c, reduction_prev, reduction, space.cnn_ops, space.partial_channels
            )

        def seq_cell(hidden: int) -> SeqCell:
            nodes = [[(j, SeqMixedOp(hidden, space.seq_ops)) for j in range(i + 2)] for i in range(space.nodes)]
            return SeqCell(hidden, nodes, concat=tuple(range(2, space.nodes + 2)))

        self.net = CellNetwork(
            input_shape=input_shape,
            n_classes=n_classes,
            cnn_cells=space.cnn_cells,
            reduction_cells=space.reduction_cells,
            init_channels=space.init_channels,
            stem_multiplier=space.stem_multiplier,
            seq_cells=space.seq_cells,
            seq_hidden=space.seq_hidden,
            dropout=space.dropout,
            make_cnn_cell=cnn_cell,
            make_seq_cell=seq_cell,
        )
        for module in self.net.modules():
            if isinstance(module, DepthwiseSeparable):
                module.recompute = recompute
        for cell in self.net.cells[:recompute_cells]:
            cell.recompute = True

    def _named_alphas(self) -> dict[str, nn.Parameter]:
        named = {"normal": self.alpha_normal, "reduce": self.alpha_reduce, "seq": self.alpha_seq}
        return {kind: alpha for kind, alpha in named.items() if alpha is not None}

    def arch_weights(self) -> dict[str, torch.Tensor]:
        """Softmaxed alphas by cell kind, as the cells take them."""
        return {kind: F.softmax(alpha, dim=-1) for kind, alpha in self._named_alphas().items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) scaled features -> (B, n_classes) logits."""
        return self.net(x, self.arch_weights())

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(x), y)

    def weights(self) -> Iterator[nn.Parameter]:
        """Every parameter but the architecture parameters."""
        return self.net.parameters()

    def alphas(self) -> list[nn.Parameter]:
        return list(self._named_alphas().values())

    def alpha_weights(self) -> dict[str, list[list[float]]]:
        """Softmaxed architecture weights per cell kind, one row per edge (see module doc), for reports."""
        with torch.no_grad():
            return {kind: F.softmax(a, dim=-1).tolist() for kind, a in self._named_alphas().items()}

    def derive(self) -> EmoDartsArchitecture:
        return derive_architecture(self.space, self.alpha_normal, self.alpha_reduce, self.alpha_seq)
