import re

import pytest

from nas.errors import ConfigError, UnknownNameError
from nas.spec import CorpusSpec, SearchSpec
from nas.strategies import get_strategy, strategy_names
from search_spaces import CNN_OPS, PRESETS, SEQ_OPS, get_preset


def test_every_preset_round_trips_through_json():
    corpus = CorpusSpec(name="ravdess", root="/data/ravdess")
    for name in PRESETS:
        spec = SearchSpec.from_preset(name, corpus)
        assert SearchSpec.model_validate_json(spec.model_dump_json()) == spec
        assert spec.preset == name


def test_paper_preset_has_the_published_defaults():
    space = get_preset("emodarts").space
    assert (space.cnn_cells, space.seq_cells, space.nodes) == (4, 2, 4)
    assert set(space.cnn_ops) == set(CNN_OPS) and set(space.seq_ops) == set(SEQ_OPS)
    assert space.reduction_cells == (1, 2)
    assert get_preset("emodarts").features.output_shape == (1, 128, 128)
    assert set(get_preset("emodarts-lstm-only").space.seq_ops) == {
        "lstm_1",
        "lstm_2",
        "lstm_3",
        "lstm_4",
        "skip_connect",
        "none",
    }


def test_overrides_apply_and_bad_ones_name_the_field():
    preset = get_preset("emodarts").with_overrides({"space.nodes": 2, "options.second_order": False})
    assert preset.space.nodes == 2 and not preset.options.second_order
    with pytest.raises(ConfigError, match=r"space\.nodes"):
        get_preset("emodarts").with_overrides({"space.nodes": 0})
    with pytest.raises(ConfigError, match=re.escape("space.<field>")):
        get_preset("emodarts").with_overrides({"nodes": 2})
    with pytest.raises(ConfigError, match=r"seq_ops"):
        get_preset("emodarts").with_overrides({"space.seq_ops": ["none"]})
    with pytest.raises(ConfigError, match=r"space\.nodes is a single value"):
        get_preset("emodarts").with_overrides({"space.nodes.x": 2})


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="choose one of: emodarts, emodarts-cnn-only"):
        get_preset("emodart")
    with pytest.raises(UnknownNameError, match="unknown strategy 'random'; choose one of: darts"):
        get_strategy("random")
    assert "darts" in strategy_names()
