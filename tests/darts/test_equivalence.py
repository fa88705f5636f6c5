"""The supernet's fast paths compute the plain DARTS function: same outputs, gradients and BN statistics.

The reference below is the supernet written the way DARTS defines it (Liu et al., 2019; pt.darts'
MixedOp): every edge is the softmax-weighted sum of its candidate ops, each op applied to the edge's
input on its own, with the supernet's own modules. Everything the supernet does to be fast (ReLU and
parameter-free ops once per state, the architecture weight folded into BN, one polyphase split of a
state for every strided or dilated op reading it) must leave this function unchanged.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nas.darts.supernet import SearchCell, Supernet
from nas.ops.seq import SeqCell
from search_spaces.darts import EmoDartsSpace
from tests.darts import single_thread  # noqa: F401 (autouse fixture)

SPACE = EmoDartsSpace(cnn_cells=3, seq_cells=2, nodes=3, init_channels=4, seq_hidden=8, dropout=0.0)


def _plain_cnn_cell(cell: SearchCell, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    states = [cell.pre0(s0), cell.pre1(s1)]
    # The supernet has one module per state for each op without parameters: its BN (of the pools) sees
    # the state once per step, however many edges read it.
    parameter_free = [[op(x) for op in ops.values()] for x, ops in zip(states, cell.shared, strict=False)]
    e = 0
    for i in range(cell.nodes):
        node = torch.zeros(())
        for j in range(i + 2):
            x = states[j]
            if j == len(parameter_free):
                parameter_free.append([op(x) for op in cell.shared[j].values()])
            for k, y in zip(cell.shared_index[cell.strides[j]], parameter_free[j], strict=True):
                node = node + weights[e, k] * y
            mixed = cell.mixed[e]
            for k, body, bn in zip(mixed.index, mixed.bodies, mixed.norms, strict=True):
                node = node + weights[e, k] * bn(body(F.relu(x)))
            e += 1
        states.append(node)
    return torch.cat(states[2:], dim=1)


def _plain_seq_cell(cell: SeqCell, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    states = [s0, s1]
    edges = iter(enumerate(cell.edges))
    for inputs in cell.inputs:
        node = torch.zeros(())
        for j in inputs:
            e, mixed = next(edges)
            for k, op in zip(mixed.index, mixed.ops, strict=True):
                node = node + weights[e, k] * op(states[j])
        states.append(node)
    return cell.out(torch.cat([states[k] for k in cell.concat], dim=-1))


def _plain_logits(net: Supernet, x: torch.Tensor) -> torch.Tensor:
    weights = net.arch_weights()
    s0 = s1 = net.net.stem(x)
    for cell in net.net.cells:
        s0, s1 = s1, _plain_cnn_cell(cell, s0, s1, weights["reduce" if cell.reduction else "normal"])
    if not net.net.seq_cells:
        return net.net.classifier(s1.mean(dim=(2, 3)))
    s0 = s1 = net.net.bridge(s1.permute(0, 3, 1, 2).flatten(2))  # (B, C', F', T') -> (B, T', C' * F') -> (B, T', H)
    for cell in net.net.seq_cells:
        s0, s1 = s1, _plain_seq_cell(cell, s0, s1, weights["seq"])
    return net.net.classifier(s1.mean(dim=1))


@pytest.mark.parametrize("space", [SPACE, SPACE.model_copy(update={"seq_cells": 0})], ids=["cnn+seq", "cnn-only"])
@pytest.mark.parametrize("shape", [(1, 16, 12), (1, 13, 11)], ids=["even", "odd"])
@pytest.mark.parametrize("recompute", [False, True], ids=["kept", "recomputed"])
def test_supernet_computes_the_plain_darts_function(
    space: EmoDartsSpace, shape: tuple[int, int, int], recompute: bool
) -> None:
    torch.manual_seed(0)
    fast = Supernet(space, shape, n_classes=3, recompute=recompute, recompute_cells=2 if recompute else 0)
    fast = fast.double().train()
    with torch.no_grad():  # larger alphas than at initialisation, so that every op's weight differs
        for alpha in fast.alphas():
            alpha.normal_()
    plain = copy.deepcopy(fast)
    x, y = torch.randn(4, *shape, dtype=torch.float64), torch.tensor([0, 1, 2, 1])

    logits = fast(x)
    plain_logits = _plain_logits(plain, x)
    torch.testing.assert_close(logits, plain_logits)
    grads = torch.autograd.grad(F.cross_entropy(logits, y), list(fast.parameters()))
    plain_grads = torch.autograd.grad(F.cross_entropy(plain_logits, y), list(plain.parameters()))
    for (name, _), grad, plain_grad in zip(fast.named_parameters(), grads, plain_grads, strict=True):
        torch.testing.assert_close(grad, plain_grad, msg=lambda m, name=name: f"{name}: {m}")
    for (name, buffer), plain_buffer in zip(fast.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(buffer, plain_buffer, msg=lambda m, name=name: f"{name}: {m}")
