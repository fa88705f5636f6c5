from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from nas.models.hmoe_simba import build
from nas.recipe import TrainRecipe
from search_spaces.distributions import CategoricalDistribution
from search_spaces.hmoe_simba import RECIPE, SPACE, HmoeSimbaArchitecture

T, D, N_CLASSES = 50, 260, 8  # 40 MFCC + deltas + delta-deltas, 128 mel bands, 12 chroma per frame
SMALL = HmoeSimbaArchitecture(
    expert_dim=16,
    lstm_layers=1,
    cnn_layers=2,
    cnn_kernel=3,
    transformer_heads=2,
    transformer_layers=1,
    router_hidden=8,
    einfft_dim=16,
    d_state=8,
    dropout=0.1,
)


def _batch(b: int, t: int = T, d: int = D, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded random frames (B, T, D) and their lengths (B,), 1 <= length <= T, one of them T."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    x = torch.randn(b, t, d, generator=g)
    x[torch.arange(t)[None, :] >= lengths[:, None]] = 0.0  # (B, T) mask of padded frames -> zero frames
    return x, lengths


def _model(arch: HmoeSimbaArchitecture = SMALL) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(arch, (T, D), N_CLASSES).eval()


def _n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_defaults_are_the_papers_best_simba_settings() -> None:
    arch = HmoeSimbaArchitecture()
    assert (arch.family, arch.einfft_dim, arch.d_state, arch.router, arch.simba) == ("hmoe-simba", 128, 256, True, True)


def test_recipe_is_the_papers_training() -> None:
    assert isinstance(RECIPE, TrainRecipe)
    assert (RECIPE.optimizer, RECIPE.lr, RECIPE.batch_size, RECIPE.weight_decay) == ("adamw", 1e-4, 32, 1e-5)
    assert (RECIPE.schedule, RECIPE.step_size, RECIPE.gamma, RECIPE.epochs) == ("step", 10, 0.9, 100)


def test_the_space_names_valid_fields_and_its_grid_builds_valid_architectures() -> None:
    arch_fields, recipe_fields = set(HmoeSimbaArchitecture.model_fields), set(TrainRecipe.model_fields)
    assert set(SPACE) <= (arch_fields - {"family"}) | recipe_fields
    assert SPACE["d_state"] == CategoricalDistribution(choices=(64, 128, 256, 512))
    defaults = HmoeSimbaArchitecture()
    for name, dist in SPACE.items():
        if name in arch_fields:
            assert dist.contains(getattr(defaults, name)), f"the default {name} lies outside the space"
    # Every combination of the interacting choices passes the validators.
    for width in SPACE["expert_dim"].choices:
        for heads in SPACE["transformer_heads"].choices:
            for kernel in SPACE["cnn_kernel"].choices:
                for dim in SPACE["einfft_dim"].choices:
                    HmoeSimbaArchitecture(expert_dim=width, transformer_heads=heads, cnn_kernel=kernel, einfft_dim=dim)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"expert_dim": 30, "transformer_heads": 4}, "must divide expert_dim"),
        ({"cnn_kernel": 4}, "must be odd"),
        ({"einfft_dim": 30, "einfft_blocks": 4}, "must divide einfft_dim"),
        ({"d_state": 0}, "greater than or equal to 1"),
        ({"gates": 3}, "Extra inputs"),
    ],
)
def test_invalid_architectures_are_refused_with_a_reason(bad: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HmoeSimbaArchitecture(**bad)


def test_architecture_json_round_trip_and_frozen() -> None:
    arch = SMALL.model_copy(update={"router": False})
    assert HmoeSimbaArchitecture.model_validate_json(arch.model_dump_json()) == arch
    with pytest.raises(ValidationError):
        arch.d_state = 64


@pytest.mark.parametrize("batch", [1, 3])
def test_logits_shape(batch: int) -> None:
    with torch.no_grad():
        assert _model()(*_batch(batch)).shape == (batch, N_CLASSES)


def test_padding_does_not_change_the_output() -> None:
    model = _model()
    x, lengths = _batch(4)
    longer = torch.cat([x, torch.zeros(4, 20, D)], dim=1)  # (B, T, D) -> (B, T + 20, D), more zero padding
    garbage = longer.clone()
    garbage[:, T:] = torch.randn(4, 20, D) * 100  # frames past each length are never read, whatever they hold
    with torch.no_grad():
        out = model(x, lengths)
        assert torch.allclose(model(longer, lengths), out, atol=1e-5), "padding to T + 20 changed the logits"
        assert torch.allclose(model(garbage, lengths), out, atol=1e-5), "the model read frames past the length"
        one = int(lengths[1])
        alone = model(x[1:2, :one], lengths[1:2])  # sample 1 unpadded, in a batch of its own
        assert torch.allclose(alone, out[1:2], atol=1e-5), "an unpadded batch of 1 differs from the padded batch"


def test_samples_are_classified_independently() -> None:
    model = _model()
    x, lengths = _batch(3)
    changed, changed_lengths = x.clone(), lengths.clone()
    changed[0] = torch.randn(T, D) * 10
    changed_lengths[0] = 5
    with torch.no_grad():
        out, out_changed = model(x, lengths), model(changed, changed_lengths)
    assert not torch.allclose(out[0], out_changed[0])
    assert torch.allclose(out[1:], out_changed[1:], atol=1e-5), "sample 0 leaked into the other samples"


def test_router_weighs_the_experts_per_utterance() -> None:
    model = _model()
    x, lengths = _batch(3)
    summary = x.sum(dim=1) / lengths[:, None]  # (B, D) mean valid frame
    with torch.no_grad():
        weights = model.router(summary)
    assert weights.shape == (3, 3) and torch.allclose(weights.sum(dim=1), torch.ones(3))
    assert bool((weights > 0).all())


@pytest.mark.parametrize("ablation", ["router", "simba"])
def test_the_papers_ablations_build_run_and_are_smaller(ablation: str) -> None:
    full, ablated = _model(), _model(SMALL.model_copy(update={ablation: False}))
    assert getattr(ablated, ablation) is None
    assert _n_parameters(ablated) < _n_parameters(full)
    x, lengths = _batch(2)
    with torch.no_grad():
        out = ablated(x, lengths)
    assert out.shape == (2, N_CLASSES) and bool(torch.isfinite(out).all())


def test_the_default_architecture_runs() -> None:
    torch.manual_seed(0)
    model = build(HmoeSimbaArchitecture(), (T, D), N_CLASSES).eval()
    with torch.no_grad():
        assert model(*_batch(2, t=12)).shape == (2, N_CLASSES)


def test_lengths_and_widths_are_checked() -> None:
    model = _model()
    x, lengths = _batch(2)
    for bad in (torch.tensor([0, 3]), torch.tensor([T + 1, 3]), torch.tensor([3.0, 3.0]), torch.tensor([3])):
        with pytest.raises(AssertionError):
            model(x, bad)
    with pytest.raises(AssertionError, match="width"):
        model(torch.zeros(2, T, D + 1), lengths)
    with pytest.raises(AssertionError, match="frame sequences"):
        build(SMALL, (1, D, T), N_CLASSES)


def test_every_parameter_gets_a_gradient() -> None:
    model = _model().train()
    model(*_batch(2)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"


def test_a_few_adam_steps_reduce_the_loss() -> None:
    model = _model().train()
    x, lengths = _batch(8, t=20, seed=1)
    y = torch.arange(8) % N_CLASSES
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, lengths), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], f"the loss did not fall: {losses}"


def test_a_genome_exports_and_predicts_real_audio(ravdess_root, tmp_path) -> None:
    """Through the registry: a small genome builds, saves as a bundle and predicts two real RAVDESS files."""
    from nas.bundle import predict_files, save_model
    from nas.features.spec import Chroma, FeatureSpec, LogMel, Mfcc
    from nas.genome import Genome
    from nas.models import build as build_genome

    # The paper's frames: 40 MFCC + deltas + delta-deltas, 128 mel bands, 12 chroma; 25 ms windows, 10 ms hop.
    features = FeatureSpec(
        frontends=(Mfcc(n_mfcc=40, deltas=2), LogMel(n_mels=128), Chroma()),
        layout="frames",
        duration_s=1.0,
        n_fft=400,
        hop_length=160,
    )
    genome = Genome(input=features, architecture=SMALL, classes=tuple(f"c{i}" for i in range(N_CLASSES)))
    save_model(tmp_path, genome, build_genome(genome), {})
    files = sorted((ravdess_root / "Actor_02").glob("*.flac"))[:2]
    predictions = predict_files(tmp_path, files)
    assert [p.error for p in predictions] == [None, None]
    assert all(sum(p.probabilities.values()) == pytest.approx(1.0) for p in predictions)
