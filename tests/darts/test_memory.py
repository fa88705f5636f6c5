"""The memory estimate: counted from the shape, close to the measured one, grows with what it should, refuses
clearly, and is close to reality."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.darts.footprint import GB, check_fits, estimate_search_memory
from nas.darts.memory import measure_search_memory
from nas.darts.supernet import Supernet
from nas.errors import ResourceError
from search_spaces.darts import EmoDartsSpace
from tests.darts import single_thread  # noqa: F401 (autouse fixture)

SMALL = EmoDartsSpace(cnn_cells=3, seq_cells=1, nodes=2, init_channels=4, seq_hidden=8)
SHAPE = (1, 16, 16)

# Tiny shapes that still exercise every part the count walks: reduction cells and the cell after them, odd
# sizes, partial channels, CNN only, several SeqNN cells and nodes, LSTMs with attention at a wider H.
SHAPES = {
    "small": (SMALL, SHAPE),
    "partial-channels": (SMALL.model_copy(update={"init_channels": 8, "partial_channels": 2}), (1, 24, 24)),
    "cnn-only": (EmoDartsSpace(cnn_cells=4, seq_cells=0, nodes=3, init_channels=4), (1, 20, 24)),
    "odd-deep": (EmoDartsSpace(cnn_cells=5, seq_cells=2, nodes=3, init_channels=4, seq_hidden=24), (1, 17, 23)),
    "lstm-attention": (
        EmoDartsSpace(
            cnn_cells=3, seq_cells=2, nodes=2, init_channels=4, seq_hidden=64, seq_ops=("lstm_1", "lstm_att_1", "none")
        ),
        (1, 16, 64),
    ),
}
# Counted / measured on these shapes: 0.90 (small: oneDNN pads the workspaces of LSTMs this narrow), 0.97 to
# 1.01 for the others; at the presets (too slow to measure each run): emodarts 0.99, emodarts-cnn-only 1.00,
# emodarts-lstm-only 1.00, emodarts-demo 0.99. A fifth leaves room for other CPUs' oneDNN workspaces.
COUNTED_WITHIN = 0.2


@pytest.mark.parametrize("name", list(SHAPES))
def test_the_counted_estimate_is_within_a_fifth_of_the_measured_one(name: str) -> None:
    space, shape = SHAPES[name]
    counted = estimate_search_memory(space, shape, 4, batch_size=8, second_order=True)
    measured = measure_search_memory(space, shape, 4, batch_size=8, second_order=True)
    weights = sum(p.numel() for p in Supernet(space, shape, 4).weights())
    assert f"{weights / 1e6:.1f}M weights" in counted.human  # the weights are counted exactly
    assert counted.parameter_bytes == measured.parameter_bytes
    ratio = counted.total_bytes / measured.total_bytes
    assert abs(ratio - 1) < COUNTED_WITHIN, (name, ratio, counted.human, measured.human)


def test_recomputed_cells_keep_less_and_the_count_follows_the_measurement() -> None:
    space, shape = SHAPES["odd-deep"]
    full = estimate_search_memory(space, shape, 4, 8, False)
    recomputed = estimate_search_memory(space, shape, 4, 8, False, recompute_cells=2)
    assert recomputed.activation_bytes < full.activation_bytes
    measured = measure_search_memory(space, shape, 4, 8, False, recompute_cells=2)
    assert abs(recomputed.total_bytes / measured.total_bytes - 1) < COUNTED_WITHIN


def test_estimate_grows_with_batch_space_and_order() -> None:
    base = estimate_search_memory(SMALL, SHAPE, 3, batch_size=4, second_order=False)
    assert base.total_bytes == base.parameter_bytes + base.activation_bytes
    assert base.activation_bytes_per_sample > 0
    assert estimate_search_memory(SMALL, SHAPE, 3, 8, False).activation_bytes > base.activation_bytes
    assert estimate_search_memory(SMALL, SHAPE, 3, 4, True).total_bytes > base.total_bytes
    wider = SMALL.model_copy(update={"nodes": 3, "init_channels": 8})
    assert estimate_search_memory(wider, SHAPE, 3, 4, False).total_bytes > base.total_bytes
    partial = SMALL.model_copy(update={"partial_channels": 2})
    assert estimate_search_memory(partial, SHAPE, 3, 4, False).activation_bytes < base.activation_bytes
    assert "GB" in base.human


def test_check_fits_refuses_with_concrete_suggestions() -> None:
    estimate = estimate_search_memory(SMALL, SHAPE, 3, batch_size=16, second_order=True)
    check_fits(estimate, estimate.total_bytes, "available")
    limit = estimate.total_bytes - 8 * estimate.activation_bytes_per_sample  # room for batch 8
    with pytest.raises(ResourceError) as refused:
        check_fits(estimate, limit, "available on cuda:0")
    message = str(refused.value)
    assert f"needs about {estimate.total_bytes / GB:.1f} GB but only {limit / GB:.1f} GB is available on cuda:0" in (
        message
    )
    assert "batch_size=8 (fits" in message
    assert "second_order=false" in message and "partial_channels=4" in message


CHILD = """
import json, sys, torch
from nas.darts.architect import Architect
from nas.darts.memory import peak_rss, reset_peak_rss
from nas.darts.supernet import Supernet
from search_spaces.darts import DartsOptions, EmoDartsSpace
space, shape, batch = EmoDartsSpace.model_validate_json(sys.argv[1]), (1, 64, 64), 8
torch.manual_seed(0)
net = Supernet(space, shape, 4).train()
options = DartsOptions()
w_optim = torch.optim.SGD(net.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
architect = Architect.from_options(net, options)
x, y = torch.randn(batch, *shape), torch.arange(batch) % 4
before = reset_peak_rss()
architect.step(x, y, x, y, 0.025, w_optim)
w_optim.zero_grad()
net.loss(x, y).backward()
w_optim.step()
print(json.dumps(peak_rss() - before))
"""


def test_estimate_is_within_a_factor_two_of_the_measured_peak() -> None:
    space = EmoDartsSpace(cnn_cells=3, seq_cells=1, nodes=2, init_channels=8, seq_hidden=16)
    estimate = estimate_search_memory(space, (1, 64, 64), 4, batch_size=8, second_order=True)  # the counted one
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, space.model_dump_json()], check=True, capture_output=True, text=True, env=env
    )
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured / 2 < estimate.total_bytes < measured * 2, (estimate.human, measured / GB)


def test_the_darts_preflight_refuses_a_search_above_its_memory_limit() -> None:
    from nas.spec import CorpusSpec, spec_from_preset
    from nas.strategies import get_strategy

    corpus = CorpusSpec(name="ravdess", root=Path("/data/ravdess"))
    strategy = get_strategy("darts")
    strategy.preflight(spec_from_preset("emodarts-demo", corpus, {"options.memory_limit_gb": 64}), 3, "cpu")
    strategy.preflight(spec_from_preset("emodarts-demo", corpus), 3, "cpu")  # fits what this machine has free
    too_big = spec_from_preset("emodarts-demo", corpus, {"options.memory_limit_gb": 0.01})
    with pytest.raises(
        ResourceError, match=r"needs about .* GB but only 0\.0 GB is allowed by options\.memory_limit_gb"
    ):
        strategy.preflight(too_big, 3, "cpu")
