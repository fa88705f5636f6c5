import re

import pytest

from nas.darts.genotype import import_genotype
from nas.errors import GenomeError
from nas.features.spec import FeatureSpec, Mfcc
from nas.genome import (
    SEQ_COLLAPSE_FLAG,
    CellGenotype,
    EmoDartsArchitecture,
    Genome,
)
from nas.recipe import TrainRecipe

# As printed by the emoDARTS code (a pt.darts fork): nested per-node edges, range() concat, an rnn cell.
EMODARTS_TEXT = """Genotype(
    normal=[[('sep_conv_3x3', 0), ('dil_conv_5x5', 1)], [('skip_connect', 0), ('sep_conv_5x5', 2)]],
    normal_concat=range(2, 4),
    reduce=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)], [('skip_connect', 2), ('avg_pool_3x3', 0)]],
    reduce_concat=range(2, 4),
    rnn=[[('lstm_att_1', 0), ('rnn_2', 1)], [('lstm_1', 2), ('skip_connect', 0)]],
    rnn_concat=range(2, 4))"""

# The original DARTS form: a flat list, two edges per node, concat as a list.
DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def _architecture(seq: CellGenotype | None) -> EmoDartsArchitecture:
    cells = import_genotype(EMODARTS_TEXT)
    return EmoDartsArchitecture(
        cnn_cells=3,
        init_channels=4,
        seq_cells=1 if seq else 0,
        seq_hidden=16,
        normal=cells["normal"],
        reduce=cells["reduce"],
        seq=seq,
    )


def test_import_emodarts_genotype_text():
    cells = import_genotype(EMODARTS_TEXT)
    assert set(cells) == {"normal", "reduce", "rnn"}
    assert cells["rnn"].ops() == ["lstm_att_1", "rnn_2", "lstm_1", "skip_connect"]
    assert cells["normal"].nodes[1][1].input == 2
    assert cells["reduce"].concat == (2, 3)


def test_import_flat_darts_genotype_text():
    cells = import_genotype(DARTS_V2_TEXT)
    assert len(cells["normal"].nodes) == 4
    assert cells["normal"].nodes[3][1].op == "dil_conv_3x3"
    assert cells["reduce"].concat == (2, 3, 4, 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Genotype(normal=__import__('os').system('true'), normal_concat=[2])", "unsupported expression"),
        ("os.system('true')", "Genotype(normal="),
        ("Genotype(normal=[[('sep_conv_3x3', 0)]], reduce=[[('sep_conv_3x3', 0)]])", "normal_concat"),
        (
            "Genotype(normal=[[('sep_conv_3x3', 5)]], normal_concat=[2], reduce=[[('skip_connect', 0)]], "
            "reduce_concat=[2])",
            "not an earlier state",
        ),
        (
            "Genotype(normal=[[('none', 0)]], normal_concat=[2], reduce=[[('skip_connect', 0)]], reduce_concat=[2])",
            "'none'",
        ),
        ("Genotype(normal=[[('sep_conv_3x3', 0)", "not valid syntax"),
    ],
)
def test_import_refuses_bad_text_with_a_reason(text, message):
    with pytest.raises(GenomeError, match=re.escape(message)):
        import_genotype(text)


def test_genome_json_round_trip_and_flags():
    cells = import_genotype(EMODARTS_TEXT)
    genome = Genome(
        input=FeatureSpec(frontends=(Mfcc(n_mfcc=40, deltas=2),), pool_to=(120, 64)),
        architecture=_architecture(cells["rnn"]),
        classes=("angry", "calm"),
        training=TrainRecipe(lr=0.025, epochs=3),
    )
    text = genome.model_dump_json()
    again = Genome.model_validate_json(text)
    assert again == genome
    assert again.family == "emodarts" and again.schema_version == 2
    assert again.training.epochs == 3
    assert again.input.output_shape == (1, 120, 64)
    assert again.architecture.flags() == []

    collapsed = CellGenotype.model_validate(
        {
            "nodes": [[{"op": "skip_connect", "input": 0}], [{"op": "skip_connect", "input": 2}]],
            "concat": [2, 3],
        }
    )
    assert _architecture(collapsed).flags() == [SEQ_COLLAPSE_FLAG]


def test_genome_refuses_inconsistent_architecture():
    cells = import_genotype(EMODARTS_TEXT)
    with pytest.raises(ValueError, match="exactly when seq_cells > 0"):
        EmoDartsArchitecture(
            cnn_cells=3,
            init_channels=4,
            seq_cells=2,
            seq_hidden=8,
            normal=cells["normal"],
            reduce=cells["reduce"],
        )
    with pytest.raises(ValueError, match="unknown ops"):
        EmoDartsArchitecture(
            cnn_cells=3,
            init_channels=4,
            seq_cells=0,
            seq_hidden=8,
            normal=cells["rnn"],
            reduce=cells["reduce"],
        )


def test_version_1_genomes_are_read_with_their_retraining_settings_as_the_recipe():
    cells = import_genotype(EMODARTS_TEXT)
    current = Genome(input=FeatureSpec(), architecture=_architecture(cells["rnn"]), classes=("angry", "calm"))
    old = current.model_dump(mode="json")
    del old["training"]
    old["schema_version"] = 1
    old["hyperparameters"] = {"train_epochs": 7, "batch_size": 8, "w_lr": 0.05, "patience": 3, "arch_lr": 3e-4}
    genome = Genome.model_validate(old)
    assert genome.schema_version == 2
    assert genome.architecture == current.architecture
    assert genome.training == TrainRecipe(optimizer="sgd", epochs=7, batch_size=8, lr=0.05, patience=3)
