"""The hyperband strategy's spaces: the paper's published Hyperband space and best model, per-family
overrides, and the driver that holds no resources of its trials."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nas.spec import CorpusSpec, HyperbandSearch, spec_from_preset
from search_spaces.cnn_lstm import Cnn2dLstmArchitecture
from search_spaces.distributions import IntDistribution
from search_spaces.hyperband import HyperbandSpace
from search_spaces.presets import default_preset, get_preset

CORPUS = CorpusSpec(name="ravdess", root="/data/ravdess")


def test_the_paper_preset_searches_the_published_cnn2d_lstm_space_on_128_by_251_log_mels():
    assert default_preset("hyperband") == "cnn2d-lstm-hyperband"
    sections = get_preset("cnn2d-lstm-hyperband").sections
    assert sections.features.output_shape == (1, 128, 251) and sections.features.scaling == "standard"
    assert (sections.options.scheduler, sections.options.reduction_factor, sections.options.sampler) == (
        "hyperband",
        3,
        "random",
    )
    space = sections.space.distributions("cnn2d-lstm")
    assert space["kernel_size"].choices == (3, 5)
    assert space["blocks"].grid() == [1, 2, 3, 4]
    assert space["first_filters"].choices == (32, 64, 128) and space["later_filters"].choices == (64, 128, 256)
    assert space["lstm_units"].grid() == list(range(32, 65, 4))
    assert space["lr"].choices == (1e-3, 1e-4, 1e-5) and space["optimizer"].choices == ("adam", "rmsprop")
    assert "dropout" not in space and "dropout" in sections.space.distributions("cnn1d-lstm")


def test_the_default_cnn2d_lstm_is_the_papers_best():
    best = Cnn2dLstmArchitecture()
    assert (best.kernel_size, best.blocks, best.filters(), best.lstm_units) == (5, 3, (128, 256, 256), 48)


def test_per_family_params_replace_the_published_ones_and_fixed_values_leave_the_search():
    space = HyperbandSpace(
        families=("cnn2d-lstm", "lstm-cnn"),
        params={"lstm-cnn": {"blocks": IntDistribution(low=1, high=2)}},
        fixed={"cnn2d-lstm": {"kernel_size": 5}},
    )
    assert space.distributions("lstm-cnn")["blocks"] == IntDistribution(low=1, high=2)
    assert "kernel_size" not in space.distributions("cnn2d-lstm")
    assert set(space.distributions("cnn2d-lstm")) == {
        "blocks",
        "first_filters",
        "later_filters",
        "lstm_units",
        "lr",
        "optimizer",
    }
    with pytest.raises(ValidationError, match="cnn-transformer, which is not searched"):
        HyperbandSpace(families=("cnn2d-lstm",), fixed={"cnn-transformer": {"heads": 2}})


def test_a_hyperband_search_holds_no_resources_its_trials_need():
    spec = spec_from_preset("cnn-families-demo", CORPUS, gpus=1, device="cuda")
    assert isinstance(spec, HyperbandSearch)
    assert (spec.search_gpus(), spec.search_cpus(2)) == (0, 0)
