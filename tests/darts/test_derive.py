"""Derivation from alphas, the genome round trip, and the discrete model built from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.darts.derive import derive_cell
from nas.darts.supernet import Supernet
from nas.features.spec import FeatureSpec
from nas.genome import SEQ_COLLAPSE_FLAG, EmoDartsArchitecture, Genome
from nas.models import build as build_model
from nas.models.emodarts import build
from search_spaces.darts import CNN_OPS, SEQ_OPS, EmoDartsSpace
from tests.darts import single_thread  # noqa: F401 (autouse fixture)

SPACE = EmoDartsSpace(cnn_cells=3, seq_cells=1, nodes=2, init_channels=4, seq_hidden=8)
SHAPE = (1, 16, 16)


def _alpha(rows: list[dict[str, float]], ops: tuple[str, ...]) -> torch.Tensor:
    alpha = torch.zeros(len(rows), len(ops))
    for e, row in enumerate(rows):
        for name, value in row.items():
            alpha[e, ops.index(name)] = value
    return alpha


def test_keeps_the_two_strongest_edges_and_never_none() -> None:
    alpha = _alpha(
        [
            # node 0 (inputs 0, 1): both kept, whatever their strength; `none` is never an op
            {"none": 10, "sep_conv_3x3": 3},
            {"dil_conv_5x5": 2},
            # node 1 (inputs 0, 1, 2): input 0's max_pool has the largest non-none logit, but
            # `none` takes most of that edge's softmax, so the edge is the weakest
            {"none": 10, "max_pool_3x3": 6},
            {"skip_connect": 4},
            {"conv_7x1_1x7": 5},
        ],
        CNN_OPS,
    )
    cell = derive_cell(alpha, CNN_OPS, nodes=2)
    assert [[(e.op, e.input) for e in node] for node in cell.nodes] == [
        [("sep_conv_3x3", 0), ("dil_conv_5x5", 1)],
        [("skip_connect", 1), ("conv_7x1_1x7", 2)],
    ]
    assert cell.concat == (2, 3)


def test_random_alphas_give_two_edges_per_node_and_no_none() -> None:
    torch.manual_seed(0)
    for nodes in (1, 3, 4):
        cell = derive_cell(torch.randn(nodes * (nodes + 3) // 2, len(SEQ_OPS)), SEQ_OPS, nodes)
        assert all(len(node) == 2 for node in cell.nodes)
        assert "none" not in cell.ops()
        assert cell.concat == tuple(range(2, nodes + 2))


def test_seq_cells_collapsed_to_skip_connect_are_flagged() -> None:
    net = Supernet(SPACE, SHAPE, n_classes=3)
    with torch.no_grad():
        net.alpha_seq.zero_()
        net.alpha_seq[:, SEQ_OPS.index("skip_connect")] = 5.0
    arch = net.derive()
    assert set(arch.seq.ops()) == {"skip_connect"}
    assert arch.flags() == [SEQ_COLLAPSE_FLAG]
    assert net.derive().flags() == arch.flags()
    with torch.no_grad():
        net.alpha_seq[0, SEQ_OPS.index("lstm_2")] = 9.0
    assert net.derive().flags() == []


def test_derived_architecture_copies_the_space_and_round_trips_to_a_model() -> None:
    torch.manual_seed(0)
    arch = Supernet(SPACE, SHAPE, n_classes=3).derive()
    assert (arch.cnn_cells, arch.init_channels, arch.seq_cells, arch.seq_hidden, arch.dropout) == (3, 4, 1, 8, 0.2)
    loaded = EmoDartsArchitecture.model_validate_json(arch.model_dump_json())
    assert loaded == arch
    model = build(loaded, SHAPE, n_classes=3).train()
    for batch in (1, 2, 5):
        logits = model(torch.randn(batch, *SHAPE))
        assert logits.shape == (batch, 3)
        logits.sum().backward()

    cnn_only = Supernet(SPACE.model_copy(update={"seq_cells": 0}), SHAPE, n_classes=3).derive()
    assert cnn_only.seq is None
    assert build(cnn_only, SHAPE, n_classes=3)(torch.randn(2, *SHAPE)).shape == (2, 3)


def test_genome_builds_the_wrapped_model() -> None:
    arch = Supernet(SPACE, SHAPE, n_classes=3).derive()
    genome = Genome(input=FeatureSpec(pool_to=(16, 16)), architecture=arch, classes=("a", "b", "c"))
    model = build_model(genome).eval()
    # 128 MFCC rows pooled to 16: the scaler is fitted (and applied) per pooled row.
    model.set_scaler(np.full(16, 0.5, np.float32), np.full(16, 2.0, np.float32))
    assert model(torch.randn(2, *SHAPE)).shape == (2, 3)


@pytest.mark.parametrize("drop_path_prob", [0.0, 0.3])
def test_discrete_model_keeps_samples_independent_in_eval_mode(drop_path_prob: float) -> None:
    torch.manual_seed(0)
    model = build(Supernet(SPACE, SHAPE, n_classes=3).derive(), SHAPE, 3, drop_path_prob=drop_path_prob)
    model.train()
    for _ in range(2):  # BN running statistics away from their initial values
        model(torch.randn(4, *SHAPE))
    model.eval()
    x = torch.randn(3, *SHAPE)
    changed = x.clone()
    changed[0] = torch.randn(*SHAPE) * 3
    with torch.no_grad():
        before, after = model(x), model(changed)
    torch.testing.assert_close(after[1:], before[1:], atol=1e-6, rtol=0)
    assert not torch.allclose(after[0], before[0])
