import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from nas.data.types import Utterance
from nas.errors import ConfigError, UnknownNameError
from nas.spec import (
    CorpusSpec,
    DartsSearch,
    FoldSpec,
    HyperbandSearch,
    SpecFieldError,
    TpeAshaSearch,
    parse_spec,
    spec_from_preset,
)
from nas.strategies import get_strategy, strategy_names
from search_spaces.darts import CNN_OPS, SEQ_OPS
from search_spaces.presets import PRESETS, default_preset, get_preset


def test_every_preset_round_trips_through_json():
    corpus = CorpusSpec(name="ravdess", root="/data/ravdess")
    for name in PRESETS:
        # An ensemble's preset cannot know the searches whose fold models it weights: the user names them.
        members = {"space.searches": ["3fa2"]} if PRESETS[name].strategy == "genetic-ensemble" else {}
        spec = spec_from_preset(name, corpus, members)
        assert parse_spec(spec.model_dump_json()) == spec
        assert parse_spec(spec.model_dump(mode="json")) == spec
        assert spec.preset == name and spec.strategy == PRESETS[name].strategy


def test_the_union_picks_the_spec_type_by_strategy():
    corpus = CorpusSpec(name="ravdess", root="/data/ravdess")
    assert isinstance(spec_from_preset("emodarts-demo", corpus), DartsSearch)
    assert isinstance(spec_from_preset("bigru-mfcc-demo", corpus), TpeAshaSearch)
    stored = DartsSearch(corpus=corpus).model_dump(mode="json")
    del stored["strategy"]  # written before there was more than one strategy
    assert isinstance(parse_spec(stored), DartsSearch)
    with pytest.raises(ValidationError):
        parse_spec({**stored, "strategy": "random"})
    assert (default_preset("darts"), default_preset("tpe-asha")) == ("emodarts", "bigru-distilhubert")


def test_specs_refuse_impossible_settings_at_validation():
    corpus = CorpusSpec(name="ravdess", root="/data/ravdess")
    for spec_type in (DartsSearch, TpeAshaSearch, HyperbandSearch):
        with pytest.raises(ValidationError, match="reserves no GPU") as refused:
            spec_type(corpus=corpus, device="cuda")
        assert refused.value.errors()[0]["loc"] == ("gpus",)  # the field to fix, even when left at its default
    assert DartsSearch(corpus=corpus, device="cuda", gpus=1).gpus == 1
    with pytest.raises(ValidationError, match=re.escape("only names folds [6]")) as refused:
        FoldSpec(n_folds=6, only=(0, 6))
    assert refused.value.errors()[0]["loc"] == ("only",)
    assert FoldSpec(by="session", only=(9,)).only == (9,)  # sessions are counted from the corpus, later
    assert FoldSpec(n_folds=6, only=(0, 5)).only == (0, 5)
    # A tpe-asha search's own task holds no GPU: its trials hold them.
    assert TpeAshaSearch(corpus=corpus, device="cuda", gpus=1).search_gpus() == 0
    assert DartsSearch(corpus=corpus, device="cuda", gpus=1).search_gpus() == 1


def _listing(speakers: int, sessions: int | None = None, per_speaker: int = 12) -> list[Utterance]:
    """A corpus listing (no audio): `per_speaker` utterances of each speaker, labels in turn."""
    return [
        Utterance(
            Path(f"/corpus/s{s}/{i}.wav"),
            ("happy", "sad", "angry")[i % 3],
            f"s{s}",
            session=None if sessions is None else f"ses{s % sessions}",
        )
        for s in range(speakers)
        for i in range(per_speaker)
    ]


@pytest.mark.parametrize("preset", ["emodarts-demo", "bigru-mfcc-demo", "cnn-families-demo", "genetic-ensemble"])
def test_every_strategy_checks_its_folds_against_the_corpus(preset):
    corpus = CorpusSpec(name="csv", root="/corpus/list.csv")
    members = {"space.searches": ["3fa2"]} if preset == "genetic-ensemble" else {}

    def refusal(listing: list[Utterance], **folds) -> SpecFieldError:
        spec = spec_from_preset(preset, corpus, members, folds=FoldSpec(**folds))
        with pytest.raises(SpecFieldError) as refused:
            spec.check_inputs(None, listing)  # no earlier searches are read: the folds fail first
        return refused.value

    too_many = refusal(_listing(4), n_folds=5)
    assert too_many.field == "folds.n_folds" and "the corpus has 4: use at most 4 folds" in str(too_many)
    no_sessions = refusal(_listing(4), by="session")
    assert no_sessions.field == "folds.by" and "use speaker folds" in str(no_sessions)
    no_such_session = refusal(_listing(4, sessions=2), by="session", only=(2,))
    assert no_such_session.field == "folds.only" and "only folds 0..1" in str(no_such_session)


def test_trials_judged_on_held_out_speakers_need_two_training_speakers_per_fold():
    corpus = CorpusSpec(name="csv", root="/corpus/list.csv")
    for preset in ("bigru-mfcc-demo", "cnn-families-demo"):
        spec = spec_from_preset(preset, corpus, folds=FoldSpec(n_folds=2))
        with pytest.raises(SpecFieldError, match=re.escape("trains on 1 speaker(s)")) as refused:
            spec.check_inputs(None, _listing(2))
        assert refused.value.field == "folds.n_folds"
        spec.check_inputs(None, _listing(4))  # two training speakers per fold: one to train on, one to judge on
    darts = spec_from_preset("emodarts-demo", corpus, folds=FoldSpec(n_folds=2))
    darts.check_inputs(None, _listing(2, per_speaker=60))  # darts cuts a fold's pool by utterance


def test_paper_preset_has_the_published_defaults():
    space = get_preset("emodarts").sections.space
    assert (space.cnn_cells, space.seq_cells, space.nodes) == (4, 2, 4)
    assert set(space.cnn_ops) == set(CNN_OPS) and set(space.seq_ops) == set(SEQ_OPS)
    assert space.reduction_cells == (1, 2)
    assert get_preset("emodarts").sections.features.output_shape == (1, 128, 128)
    assert set(get_preset("emodarts-lstm-only").sections.space.seq_ops) == {
        "lstm_1",
        "lstm_2",
        "lstm_3",
        "lstm_4",
        "skip_connect",
        "none",
    }


def test_overrides_apply_and_bad_ones_name_the_field():
    preset = get_preset("emodarts").with_overrides({"space.nodes": 2, "options.second_order": False})
    assert preset.sections.space.nodes == 2 and not preset.sections.options.second_order
    assert preset.strategy == "darts"
    with pytest.raises(ConfigError, match=r"space\.nodes"):
        get_preset("emodarts").with_overrides({"space.nodes": 0})
    with pytest.raises(ConfigError, match=re.escape("space.<field>")):
        get_preset("emodarts").with_overrides({"nodes": 2})
    with pytest.raises(ConfigError, match=r"seq_ops"):
        get_preset("emodarts").with_overrides({"space.seq_ops": ["none"]})
    with pytest.raises(ConfigError, match=r"space\.nodes is a single value"):
        get_preset("emodarts").with_overrides({"space.nodes.x": 2})


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(
        UnknownNameError,
        match="choose one of: bigru-distilhubert, bigru-mfcc-demo, cnn-families-demo, cnn2d-lstm-hyperband, emodarts, ",
    ):
        get_preset("emodart")
    with pytest.raises(
        UnknownNameError, match="unknown strategy 'random'; choose one of: darts, genetic-ensemble, hyperband, tpe-asha"
    ):
        get_strategy("random")
    assert set(strategy_names()) == {"darts", "tpe-asha", "hyperband", "genetic-ensemble"}
