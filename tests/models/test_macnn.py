from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError

from nas.metrics import count_parameters
from nas.models.macnn import (
    HeadFusionAttention,
    Icasa,
    ImprovedCoordinateAttention,
    Macnn,
    ShuffleAttention,
    build,
    channel_shuffle,
    pooled_sides,
)
from nas.recipe import TrainRecipe
from search_spaces.distributions import CategoricalDistribution
from search_spaces.macnn import FEATURES, RECIPE, SPACE, MacnnArchitecture

# Li et al. (2026): a 2 s segment, 200 frames of 39 MFCCs (13 + deltas + delta-deltas); RAVDESS' 8 classes
SEGMENT = (200, 39)
CLASSES = 8
ATTENTIONS = ("icasa", "ica", "sa", "none")


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """As in tests/darts: these small tensors gain nothing from a second thread, and on a shared CPU every
    parallel region may wait for a descheduled one (the Adam steps below ran 100x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _frames(b: int, shape: tuple[int, ...] = SEGMENT, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """b random (T, D) sequences, all T frames real."""
    x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))
    return x, torch.full((b,), shape[0])


def _model(arch: MacnnArchitecture, shape: tuple[int, ...] = SEGMENT, n_classes: int = CLASSES) -> Macnn:
    torch.manual_seed(0)
    model = build(arch, shape, n_classes)
    assert isinstance(model, Macnn)
    return model


def test_the_default_is_the_published_network() -> None:
    arch = MacnnArchitecture()
    assert arch.channels == (16, 32, 48, 64, 80) and arch.heads == 4
    assert (arch.attention, arch.sa_groups, arch.ica_reduction) == ("icasa", 4, 32)
    model = _model(arch)
    assert [m.out_channels for m in (model.conv1a[0], model.conv1b[0])] == [8, 8]
    assert [m.kernel_size for m in (model.conv1a[0], model.conv1b[0])] == [(10, 2), (2, 8)]
    convs = [m for m in model.blocks.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 32), (32, 48), (48, 64), (64, 80)]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 2
    assert sum(isinstance(m, Icasa) for m in model.modules()) == 4
    assert count_parameters(model) == 167_824  # Li et al. report 2.15 M; their text does not account for it


def test_a_segment_map_gives_logits() -> None:
    model = _model(MacnnArchitecture()).eval()
    with torch.no_grad():
        for b in (1, 2):
            assert model(*_frames(b)).shape == (b, CLASSES)


@pytest.mark.parametrize(("f", "t"), [(10, 8), (5, 5), (13, 24)])
def test_the_last_conv_map_is_quartered(f: int, t: int) -> None:
    model = _model(MacnnArchitecture(), (t, f)).eval()
    with torch.no_grad():
        x, lengths = _frames(2, (t, f))
        image = x.transpose(1, 2).unsqueeze(1)  # (B, T, D) -> (B, 1, D, T): features are the map's rows
        h = model.blocks(torch.cat([model.conv1a(image), model.conv1b(image)], dim=1))
        assert model(x, lengths).shape == (2, CLASSES)
    assert h.shape == (2, 80, *pooled_sides(f, t))
    assert pooled_sides(39, 200) == (9, 49)


def test_inputs_too_small_for_the_pools_are_refused() -> None:
    with pytest.raises(AssertionError, match="at least 5 features and 5 frames"):
        build(MacnnArchitecture(), (200, 4), CLASSES)
    with pytest.raises(AssertionError, match=r"input_shape \(T, D\)"):
        build(MacnnArchitecture(), (1, 39, 200), CLASSES)
    model = _model(MacnnArchitecture()).eval()
    with pytest.raises(AssertionError, match="at least 5 frames"):
        model(*_frames(1, (4, 39)))
    with pytest.raises(AssertionError, match="width D=39"):
        model(*_frames(1, (200, 40)))


def test_padding_reads_as_zero_whatever_it_holds() -> None:
    model = _model(MacnnArchitecture()).eval()
    x, _ = _frames(2)
    lengths = torch.tensor([200, 120])
    garbage = x.clone()
    garbage[1, 120:] = 1e3
    zeroed = x.clone()
    zeroed[1, 120:] = 0
    with torch.no_grad():
        assert torch.equal(model(garbage, lengths), model(zeroed, lengths))
        assert torch.equal(model(zeroed, lengths), model(zeroed, torch.tensor([200, 200])))


def test_beta_starts_at_one_half_and_is_trained() -> None:
    model = _model(MacnnArchitecture(), (24, 13)).train()
    names = [name for name, p in model.named_parameters() if name.endswith(".beta")]
    assert len(names) == 4
    icasas = [m for m in model.modules() if isinstance(m, Icasa)]
    assert all(m.beta.item() == 0.5 and m.beta.requires_grad and m.beta.dim() == 0 for m in icasas)
    torch.nn.functional.cross_entropy(model(*_frames(4, (24, 13))), torch.tensor([0, 1, 2, 3])).backward()
    assert all(m.beta.grad is not None and m.beta.grad.item() != 0 for m in icasas)


def test_icasa_mixes_its_two_paths_by_beta() -> None:
    torch.manual_seed(0)
    icasa = Icasa(16, reduction=32, groups=4).eval()
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        icasa.beta.fill_(0.25)
        expected = 0.25 * icasa.ica(x) + 0.75 * icasa.sa(x)
        assert torch.allclose(icasa(x), expected)


def test_channel_shuffle_by_hand() -> None:
    x = torch.arange(8.0).reshape(1, 8, 1, 1)  # channel c holds c
    # ShuffleNet (Zhang et al., 2018): 2 groups of 4, channel g * 4 + i goes to i * 2 + g
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    shuffled = channel_shuffle(torch.randn(3, 12, 2, 5), 3)
    assert shuffled.shape == (3, 12, 2, 5)
    with pytest.raises(AssertionError, match="divide"):
        channel_shuffle(x, 3)


def test_shuffle_attention_permutes_its_gated_channels() -> None:
    # Zhang & Yang (2021) start every gate at sigmoid(0 * . + 1), so SA begins as a scaled channel shuffle
    sa = ShuffleAttention(8, groups=2)
    x = torch.arange(8.0).reshape(1, 8, 1, 1).expand(2, 8, 3, 4).contiguous()  # channel c holds c everywhere
    out = sa(x) / torch.sigmoid(torch.tensor(1.0))
    channel_of = out[0, :, 0, 0].round().long().tolist()
    assert channel_of == [0, 4, 1, 5, 2, 6, 3, 7]
    assert sorted(channel_of) == list(range(8))  # a permutation: no channel lost or repeated
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))
    with pytest.raises(AssertionError, match="must divide"):
        ShuffleAttention(12, groups=4)


def test_coordinate_attention_gates_rows_and_frames() -> None:
    torch.manual_seed(0)
    ica = ImprovedCoordinateAttention(32, reduction=32).eval()
    assert ica.pointwise.out_channels == 8  # Hou et al. (2021): max(8, C / r)
    assert ica.depthwise.groups == 32  # depthwise, then pointwise: a depthwise-separable conv
    x = torch.randn(2, 32, 9, 11)
    with torch.no_grad():
        out = ica(x)
    assert out.shape == x.shape
    assert torch.all(out.abs() <= x.abs())  # two sigmoid gates in (0, 1)


def test_head_fusion_keeps_the_map_and_normalises_channels() -> None:
    torch.manual_seed(0)
    fusion = HeadFusionAttention(80, heads=4, head_width=16)
    out = fusion(torch.randn(2, 80, 9, 13))
    assert out.shape == (2, 80, 9, 13)
    assert torch.allclose(out.mean(dim=1), torch.zeros(2, 9, 13), atol=1e-5)  # layer norm over channels
    assert torch.allclose(torch.softmax(fusion.head_logits, 0), torch.full((4,), 0.25))  # heads start equal


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_ablation_builds_and_runs(attention: str) -> None:
    model = _model(MacnnArchitecture(attention=attention)).eval()
    with torch.no_grad():
        assert model(*_frames(2)).shape == (2, CLASSES)
    kinds = {type(m) for m in model.blocks.modules()} & {Icasa, ImprovedCoordinateAttention, ShuffleAttention}
    assert (
        kinds
        == {
            "icasa": {Icasa, ImprovedCoordinateAttention, ShuffleAttention},
            "ica": {ImprovedCoordinateAttention},
            "sa": {ShuffleAttention},
            "none": set(),
        }[attention]
    )


def test_attention_only_where_asked() -> None:
    model = _model(MacnnArchitecture(attention_after=(5,)))
    assert [isinstance(block[-1], Icasa) for block in model.blocks] == [False, False, False, True]


def test_adam_steps_lower_the_loss() -> None:
    # a slim ICASA-MACNN keeps the steps fast
    arch = MacnnArchitecture(channels=(8, 16, 16), attention_after=(2, 3), sa_groups=2, heads=2, head_width=8)
    model = _model(arch, (24, 13), n_classes=4).train()
    (x, lengths), y = _frames(8, (24, 13), seed=1), torch.arange(8) % 4
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE.lr, weight_decay=RECIPE.weight_decay)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, lengths), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.75 * losses[0], losses


def test_eval_mode_is_deterministic() -> None:
    model = _model(MacnnArchitecture(dropout=0.5), (24, 13)).eval()
    x, lengths = _frames(3, (24, 13))
    with torch.no_grad():
        assert torch.equal(model(x, lengths), model(x, lengths))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"channels": (15, 32, 48)}, "must be even"),
        ({"channels": (16, 32)}, "at least 3"),
        ({"attention_after": (3, 2)}, "strictly increasing"),
        ({"attention_after": (1,)}, "outside Conv2..Conv5"),
        ({"attention_after": (6,)}, "outside Conv2..Conv5"),
        ({"attention_after": ()}, "at least 1"),
        ({"channels": (16, 32, 44), "attention_after": (2, 3)}, "must divide 44"),
        ({"channels": (16, 32, 48)}, "outside Conv2..Conv3"),
        ({"sa_groups": 3}, "2 \\* sa_groups = 6 must divide 32"),
        ({"heads": 0}, "greater than or equal to 1"),
        ({"family": "macnn"}, "macnn-icasa"),
        ({"pool": 2}, "Extra inputs"),
    ],
)
def test_bad_architectures_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MacnnArchitecture(**fields)


def test_shuffle_groups_are_not_checked_without_shuffle_attention() -> None:
    assert MacnnArchitecture(channels=(16, 32, 44), attention_after=(2, 3), attention="ica").channels[-1] == 44


def test_the_space_draws_valid_configurations() -> None:
    arch_fields = set(MacnnArchitecture.model_fields) - {"family"}
    assert set(SPACE) <= arch_fields | set(TrainRecipe.model_fields)
    for name, dist in SPACE.items():
        assert isinstance(dist, CategoricalDistribution) or name == "dropout"
        for value in dist.choices if isinstance(dist, CategoricalDistribution) else dist.grid():
            if name in arch_fields:
                MacnnArchitecture(**{name: value})
            else:
                TrainRecipe.model_validate(RECIPE.model_dump() | {name: value})
    assert SPACE["lr"].choices == (1e-3, 5e-4, 1e-4)


def test_the_recipe_is_the_published_one() -> None:
    assert (RECIPE.optimizer, RECIPE.lr, RECIPE.weight_decay) == ("adam", 1e-3, 1e-6)
    assert (RECIPE.batch_size, RECIPE.epochs, RECIPE.schedule, RECIPE.grad_clip) == (32, 60, "constant", None)


def test_the_published_features_are_2_s_segments_of_39_mfccs() -> None:
    assert FEATURES.network_shape == SEGMENT
    assert FEATURES.segments is not None and FEATURES.hop_length == 160 and FEATURES.sample_rate == 16000
    assert (FEATURES.segments.train_stride, FEATURES.segments.test_stride) == (100, 40)  # 1 s and 0.4 s
    assert (FEATURES.n_fft, FEATURES.window, FEATURES.frontends[0].mel_bands) == (400, "hamming", 26)


def test_a_genome_exports_and_predicts_real_audio(ravdess_root, tmp_path) -> None:
    """Through the registry: the segmented genome builds, saves as a bundle and predicts two real RAVDESS files."""
    from nas.bundle import predict_files, save_model
    from nas.genome import Genome
    from nas.models import build as build_genome

    genome = Genome(input=FEATURES, architecture=MacnnArchitecture(), classes=tuple(f"c{i}" for i in range(CLASSES)))
    save_model(tmp_path, genome, build_genome(genome), {})
    files = sorted((ravdess_root / "Actor_01").glob("*.flac"))[:2]
    predictions = predict_files(tmp_path, files)
    assert [p.error for p in predictions] == [None, None]
    assert all(sum(p.probabilities.values()) == pytest.approx(1.0) for p in predictions)
