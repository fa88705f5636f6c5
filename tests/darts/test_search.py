"""The search loop: an interrupted search resumes to the same result and loses no epoch report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.darts.search import SearchData, measure_step_seconds, search_supernet
from nas.dataset import Examples
from nas.genome import EmoDartsArchitecture
from search_spaces.darts import DartsOptions, EmoDartsSpace
from tests.darts import single_thread  # noqa: F401 (autouse fixture)

SPACE = EmoDartsSpace(cnn_cells=3, seq_cells=1, nodes=2, init_channels=4, seq_hidden=8)
OPTIONS = DartsOptions(search_epochs=3, batch_size=8, second_order=False)


class Crash(Exception):
    pass


def _data() -> SearchData:
    rng = np.random.default_rng(0)
    y = np.arange(32) % 2
    x = rng.normal(size=(32, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]  # learnable
    return SearchData(weights=Examples(x[:16], y[:16]), arch=Examples(x[16:], y[16:]), classes=("calm", "angry"))


Report = tuple[int, dict[str, float], EmoDartsArchitecture]


def _search(checkpoint: Path, on_epoch=None) -> list[Report]:
    reports: list[Report] = []

    def record(epoch: int, metrics: dict[str, float], arch: EmoDartsArchitecture) -> None:
        reports.append((epoch, metrics, arch))
        if on_epoch is not None:
            on_epoch(epoch)

    search_supernet(
        SPACE, OPTIONS, _data(), seed=0, device="cpu", checkpoint=checkpoint, on_epoch=record, progress=False
    )
    return reports


def test_resumed_search_matches_an_uninterrupted_one_and_reports_every_epoch(tmp_path: Path) -> None:
    straight = _search(tmp_path / "straight.ckpt")

    def crash_after_epoch_2(epoch: int) -> None:
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        _search(tmp_path / "resumed.ckpt", crash_after_epoch_2)
    resumed = _search(tmp_path / "resumed.ckpt")  # epoch 2 was checkpointed, its report crashed

    assert [epoch for epoch, _, _ in resumed] == [1, 2, 3]
    assert resumed == straight


def test_measuring_a_step_leaves_the_search_it_precedes_unchanged(tmp_path: Path) -> None:
    """The duration estimate runs two steps of a throwaway supernet before a search: the search that follows
    must draw the same random numbers as one without it."""
    import torch

    torch.manual_seed(7)
    state = torch.get_rng_state()
    seconds = measure_step_seconds(SPACE, OPTIONS, (1, 8, 8), 2, device="cpu")
    assert seconds > 0
    assert torch.equal(torch.get_rng_state(), state), "the estimate consumed random numbers of the search"
