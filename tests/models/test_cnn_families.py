from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from nas.errors import ConfigError
from nas.features.spec import FeatureSpec, LogMel, Mfcc
from nas.genome import Genome
from nas.metrics import count_parameters
from nas.models import SerModel, build
from nas.ops.blocks import conv_stack, pooled_size
from search_spaces.cnn_lstm import Cnn1dLstmArchitecture, Cnn2dLstmArchitecture, FusedCnnLstmArchitecture
from search_spaces.cnn_transformer import CnnTransformerArchitecture
from search_spaces.distributions import CategoricalDistribution
from search_spaces.families import get_family, realise
from search_spaces.lstm_cnn import LstmCnnArchitecture

CLASSES = ("neutral", "happy", "sad", "angry")
# 20 MFCC rows stacked on 32 log-mel rows: a (1, 52, 63) map
SPEC = FeatureSpec(frontends=(Mfcc(n_mfcc=20), LogMel(n_mels=32)), duration_s=2.0, hop_length=512, pool_to=None)
_CONV = {"kernel_size": 3, "blocks": 2, "first_filters": 4, "later_filters": 8, "lstm_units": 8}
SMALL: dict[str, BaseModel] = {
    "cnn2d-lstm": Cnn2dLstmArchitecture(**_CONV, dropout=0.1),
    "cnn1d-lstm": Cnn1dLstmArchitecture(**_CONV, dropout=0.1),
    "cnn-lstm-fused": FusedCnnLstmArchitecture(**_CONV, split_rows=20, dropout=0.1),
    "lstm-cnn": LstmCnnArchitecture(**_CONV, dropout=0.1),
    "cnn-transformer": CnnTransformerArchitecture(filters=(4, 8), kernel_size=3, heads=2, ff_units=16, dropout=0.1),
}
FAMILIES = list(SMALL)


def _genome(arch: BaseModel, spec: FeatureSpec = SPEC) -> Genome:
    return Genome(input=spec, architecture=arch, classes=CLASSES)


def _model(family: str) -> SerModel:
    torch.manual_seed(0)
    return build(_genome(SMALL[family]))


def _batch(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, *SPEC.output_shape, generator=torch.Generator().manual_seed(seed))


def test_the_small_spec_is_a_map() -> None:
    assert SPEC.output_shape == (1, 52, 63)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch pads a copy for even kernels
@pytest.mark.parametrize("kernel_size", [1, 3, 4, 5])
def test_conv_blocks_halve_every_axis_rounding_up(kernel_size: int) -> None:
    for dims, size in ((1, (7,)), (2, (5, 1)), (2, (1, 9))):
        stack = conv_stack(3, (4, 6, 5), kernel_size, dims).eval()
        with torch.no_grad():
            out = stack(torch.randn(2, 3, *size))
        assert out.shape == (2, 5, *(pooled_size(n, 3) for n in size))
    assert [pooled_size(n, 3) for n in (1, 5, 7, 8, 9, 128, 251)] == [1, 1, 1, 1, 2, 16, 32]


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_from_a_genome_and_gives_logits(family: str) -> None:
    model = _model(family).eval()
    assert isinstance(model, SerModel) and model.body is not None
    with torch.no_grad():
        for b in (1, 3):
            assert model(_batch(b)).shape == (b, len(CLASSES))


@pytest.mark.parametrize("family", FAMILIES)
def test_one_training_step(family: str) -> None:
    model = _model(family).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameter_groups(weight_decay=0.0), lr=1e-3)
    loss = torch.nn.functional.cross_entropy(model(_batch(4)), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss), f"{family}: loss {loss.item()}"
    loss.backward()
    opt.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged, f"{family}: one step left {unchanged} unchanged"


@pytest.mark.parametrize("family", FAMILIES)
def test_genome_round_trip_rebuilds_the_same_model(family: str) -> None:
    genome = _genome(SMALL[family])
    again = Genome.model_validate_json(genome.model_dump_json())
    assert again == genome
    first = _model(family)
    first.set_scaler(np.linspace(-1, 1, SPEC.scaled_features), np.linspace(0.5, 2, SPEC.scaled_features))
    first.train()
    first(_batch(4, seed=1))  # non-trivial batch norm running statistics
    rebuilt = build(again)
    rebuilt.load_state_dict(first.state_dict())
    x = _batch(3)
    with torch.no_grad():
        assert torch.equal(first.eval()(x), rebuilt.eval()(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_samples_are_classified_independently(family: str) -> None:
    model = _model(family).eval()
    x = _batch(3)
    changed = x.clone()
    changed[0] = torch.randn(SPEC.output_shape) * 10
    with torch.no_grad():
        out, out_changed = model(x), model(changed)
        alone = model(x[1:2])
    assert not torch.allclose(out[0], out_changed[0])
    assert torch.allclose(out[1:], out_changed[1:], atol=1e-5), f"{family}: sample 0 leaked into the others"
    assert torch.allclose(alone, out[1:2], atol=1e-5), f"{family}: a batch of 1 differs from the same sample"


def test_paper_sized_cnn2d_lstm_parameter_count() -> None:
    spec = FeatureSpec(frontends=(LogMel(n_mels=128),), duration_s=8.0, hop_length=512, pool_to=None)
    assert spec.output_shape == (1, 128, 251)
    arch = Cnn2dLstmArchitecture()
    assert (arch.kernel_size, arch.blocks, arch.filters(), arch.lstm_units) == (5, 3, (128, 256, 256), 48)
    model = build(_genome(arch, spec))
    k, h, n = 5, 48, len(CLASSES)
    convs = 1 * 128 * k * k + 128 * 256 * k * k + 256 * 256 * k * k  # no conv bias: batch norm follows
    norms = 2 * (128 + 256 + 256)  # scale and shift per channel
    lstm_in = 256 * (128 // 2**3)  # C x F' after three halvings of the 128 mel rows: 4096
    lstm = 4 * h * (lstm_in + h) + 2 * 4 * h  # four gates: input and recurrent weights, torch's two biases
    classifier = h * n + n
    assert convs + norms + lstm + classifier == 3_258_308
    assert count_parameters(model) == convs + norms + lstm + classifier
    with torch.no_grad():
        assert model.eval()(torch.randn(1, *spec.output_shape)).shape == (1, n)


def test_fused_split_must_leave_rows_to_both_branches() -> None:
    for split in (52, 60):
        arch = FusedCnnLstmArchitecture(**_CONV, split_rows=split)
        with pytest.raises(ConfigError, match=rf"split_rows {split} .*\(0 < split_rows < 52\)"):
            build(_genome(arch))


def test_fused_branches_read_their_rows() -> None:
    model = _model("cnn-lstm-fused").eval()
    body = model.body
    assert (body.encoder_1d.rows, body.encoder_2d.rows) == (20, 32)
    x = _batch(2)
    mel_changed = x.clone()
    mel_changed[:, :, 20:] += 1.0
    with torch.no_grad():
        mfcc_state = body.encoder_1d(x[:, :, :20])
        assert torch.equal(mfcc_state, body.encoder_1d(mel_changed[:, :, :20]))
        assert not torch.allclose(model(x), model(mel_changed))


def _first(family: str) -> dict[str, object]:
    """The first choice or the low end of every distribution of the family's space."""
    space = get_family(family).space
    return {k: d.choices[0] if isinstance(d, CategoricalDistribution) else d.low for k, d in space.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_sample_of_the_search_space_builds(family: str) -> None:
    arch, recipe = realise(family, _first(family))
    assert arch.family == family and recipe.lr == 1e-3
    torch.manual_seed(0)
    model = build(_genome(arch))
    model.train()
    loss = torch.nn.functional.cross_entropy(model(_batch(2)), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        assert model.eval()(_batch(2)).shape == (2, len(CLASSES))


def test_a_seeded_build_draws_the_same_weights_whatever_ran_before_and_leaves_the_rng_alone():
    genome = _genome(Cnn2dLstmArchitecture(blocks=2, first_filters=8, later_filters=8, lstm_units=8))
    torch.manual_seed(1)
    first = build(genome, seed=5).state_dict()
    torch.rand(1000)  # a process that drew other numbers first
    before = torch.get_rng_state()
    second = build(genome, seed=5).state_dict()
    assert torch.equal(before, torch.get_rng_state()), "the process's random state is untouched"
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = build(genome, seed=6).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)
