"""The supernet: any batch size, samples independent, `none` never computed, parameters split."""

from __future__ import annotations

import pytest
import torch

from nas.darts.supernet import Supernet
from nas.ops.cnn import Zero
from nas.ops.seq import SeqZero
from search_spaces.darts import EmoDartsSpace
from tests.darts import single_thread  # noqa: F401 (autouse fixture)

TINY = EmoDartsSpace(cnn_cells=3, seq_cells=1, nodes=2, init_channels=4, seq_hidden=8)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "space",
    [TINY, TINY.model_copy(update={"seq_cells": 0}), TINY.model_copy(update={"partial_channels": 2})],
    ids=["cnn+seq", "cnn-only", "partial-channels"],
)
@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 13, 11)])
def test_trains_on_any_batch_size(space: EmoDartsSpace, shape: tuple[int, int, int]) -> None:
    net = Supernet(space, shape, n_classes=3).train()
    for batch in (1, 2, 5):
        x, y = torch.randn(batch, *shape), torch.arange(batch) % 3
        assert net(x).shape == (batch, 3)
        net.loss(x, y).backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.alphas())


@pytest.mark.parametrize("space", [TINY, TINY.model_copy(update={"partial_channels": 2})], ids=["darts", "pc"])
def test_samples_are_independent_in_eval_mode(space: EmoDartsSpace) -> None:
    """The reference recurs across the batch; ours must not mix samples anywhere."""
    net = Supernet(space, (1, 16, 16), n_classes=3)
    net.train()
    for _ in range(2):  # give BN running statistics other values than their initial ones
        net(torch.randn(4, 1, 16, 16))
    net.eval()
    x = torch.randn(3, 1, 16, 16)
    changed = x.clone()
    changed[0] = torch.randn(1, 16, 16) * 3
    with torch.no_grad():
        before, after = net(x), net(changed)
    torch.testing.assert_close(after[1:], before[1:], atol=1e-6, rtol=0)
    assert not torch.allclose(after[0], before[0])


def test_weights_and_alphas_are_disjoint_and_cover_all_parameters() -> None:
    net = Supernet(TINY, (1, 16, 16), n_classes=3)
    weights = {id(p) for p in net.weights()}
    alphas = {id(a) for a in net.alphas()}
    assert len(alphas) == 3 and not weights & alphas
    assert weights | alphas == {id(p) for p in net.parameters()}
    edges = 2 + 3  # node 0 has 2 inputs, node 1 has 3
    assert net.alpha_normal.shape == net.alpha_reduce.shape == (edges, len(TINY.cnn_ops))
    assert net.alpha_seq.shape == (edges, len(TINY.seq_ops))
    cnn_only = Supernet(TINY.model_copy(update={"seq_cells": 0}), (1, 16, 16), n_classes=3)
    assert cnn_only.alpha_seq is None and len(cnn_only.alphas()) == 2


def test_none_is_never_computed_but_takes_part_in_the_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a 'none' op was run")

    monkeypatch.setattr(Zero, "forward", refuse)
    monkeypatch.setattr(SeqZero, "forward", refuse)
    net = Supernet(TINY, (1, 16, 16), n_classes=3)
    assert not any(isinstance(m, Zero | SeqZero) for m in net.modules())
    net.loss(torch.randn(2, 1, 16, 16), torch.tensor([0, 1])).backward()
    none = TINY.cnn_ops.index("none"), TINY.seq_ops.index("none")
    # Raising alpha(none) scales every other op down, so the loss still depends on it.
    assert net.alpha_normal.grad[:, none[0]].abs().sum() > 0
    assert net.alpha_seq.grad[:, none[1]].abs().sum() > 0


def test_alpha_weights_are_softmaxed_rows_per_edge() -> None:
    net = Supernet(TINY, (1, 16, 16), n_classes=3)
    weights = net.alpha_weights()
    assert set(weights) == {"normal", "reduce", "seq"}
    for rows in weights.values():
        assert len(rows) == 5
        assert all(abs(sum(row) - 1) < 1e-6 for row in rows)


def test_recomputation_changes_nothing_but_memory() -> None:
    """Recomputed depthwise maps and recomputed cells give the same gradients and BN statistics."""
    x, y = torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 2])
    results = []
    for recompute, cells in ((False, 0), (True, 3)):
        torch.manual_seed(0)
        net = Supernet(TINY, (1, 16, 16), n_classes=3, recompute=recompute, recompute_cells=cells)
        torch.manual_seed(1)  # the same dropout mask
        net.loss(x, y).backward()
        results.append(([p.grad for p in net.parameters()], [b.clone() for b in net.buffers()]))
    (grads, buffers), (grads_rc, buffers_rc) = results
    torch.testing.assert_close(grads_rc, grads)
    torch.testing.assert_close(buffers_rc, buffers)


@pytest.mark.parametrize("frozen_cnn", [False, True], ids=["full-backward", "frozen-cnn"])
def test_seq_part_leaves_the_thread_count_as_it_found_it(frozen_cnn: bool) -> None:
    """The SeqNN part runs on one thread, forward and backward; the count must come back after both,
    also when the gradient stops inside the SeqNN part."""
    net = Supernet(TINY, (1, 16, 16), n_classes=3).train()
    if frozen_cnn:
        net.net.stem.requires_grad_(False)
        net.net.cells.requires_grad_(False)
    x, y = torch.randn(2, 1, 16, 16), torch.tensor([0, 1])
    torch.set_num_threads(2)
    loss = net.loss(x, y)
    assert torch.get_num_threads() == 2
    torch.autograd.grad(loss, [a for a in net.alphas() if a.requires_grad][-1:] if frozen_cnn else list(net.alphas()))
    assert torch.get_num_threads() == 2
