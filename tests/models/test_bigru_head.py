from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from nas.models.bigru_head import build
from search_spaces.bigru import BiGruArchitecture

T, D = 30, 16
SMALL = BiGruArchitecture(layers=2, base_units=24, final_units=8, dropout=0.2, l2=0.016)


def _batch(b: int, t: int = T, d: int = D, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded random frames (B, T, D) and their lengths (B,), 1 <= length <= T."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t  # one full-length sample
    x = torch.randn(b, t, d, generator=g)
    x[torch.arange(t)[None, :] >= lengths[:, None]] = 0.0  # (B, T) mask of padded frames -> zero frames
    return x, lengths


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(SMALL, (T, D), n_classes=4).eval()


def test_defaults_are_the_papers_best_shemo_configuration() -> None:
    arch = BiGruArchitecture()
    assert (arch.family, arch.layers, arch.base_units, arch.final_units) == ("bigru-head", 2, 192, 32)
    assert (arch.dropout, arch.l2) == (0.2, 0.016)


@pytest.mark.parametrize(
    ("layers", "base", "final", "units"),
    [(1, 192, 32, (192,)), (2, 192, 32, (192, 32)), (3, 256, 32, (256, 144, 32)), (4, 128, 32, (128, 96, 64, 32))],
)
def test_units_are_spaced_linearly(layers: int, base: int, final: int, units: tuple[int, ...]) -> None:
    assert BiGruArchitecture(layers=layers, base_units=base, final_units=final).units() == units


def test_units_are_rounded_to_ints() -> None:
    units = BiGruArchitecture(layers=3, base_units=160, final_units=32).units()  # 160, 96, 32
    assert units == (160, 96, 32) and all(isinstance(u, int) for u in units)
    assert BiGruArchitecture(layers=4, base_units=100, final_units=32).units() == (100, 77, 55, 32)


def test_architecture_json_round_trip_and_validation() -> None:
    arch = BiGruArchitecture(layers=3, base_units=256, final_units=64, dropout=0.35, l2=0.025)
    assert BiGruArchitecture.model_validate_json(arch.model_dump_json()) == arch
    for bad in ({"layers": 0}, {"layers": 5}, {"dropout": 1.0}, {"l2": -0.1}, {"base_units": 0}, {"extra": 1}):
        with pytest.raises(ValidationError):
            BiGruArchitecture(**bad)
    with pytest.raises(ValidationError):
        arch.layers = 1  # frozen


def test_layers_follow_the_units() -> None:
    net = build(BiGruArchitecture(layers=3, base_units=256, final_units=32), (T, D), n_classes=6)
    assert [(g.input_size, g.hidden_size, g.bidirectional) for g in net.grus] == [
        (D, 256, True),
        (512, 144, True),
        (288, 32, True),
    ]
    assert (net.classifier.in_features, net.classifier.out_features) == (64, 6)


@pytest.mark.parametrize("batch", [1, 3])
def test_logits_shape(model: torch.nn.Module, batch: int) -> None:
    with torch.no_grad():
        assert model(*_batch(batch)).shape == (batch, 4)


def test_default_architecture_on_distilhubert_frames() -> None:
    torch.manual_seed(0)
    net = build(BiGruArchitecture(), (300, 768), n_classes=6).eval()
    x, lengths = _batch(2, t=50, d=768)
    with torch.no_grad():
        assert net(x, lengths).shape == (2, 6)


def test_padding_does_not_change_the_output(model: torch.nn.Module) -> None:
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


def test_samples_are_classified_independently(model: torch.nn.Module) -> None:
    x, lengths = _batch(3)
    changed, changed_lengths = x.clone(), lengths.clone()
    changed[0] = torch.randn(T, D) * 10
    changed_lengths[0] = 5
    with torch.no_grad():
        out, out_changed = model(x, lengths), model(changed, changed_lengths)
    assert not torch.allclose(out[0], out_changed[0])
    assert torch.allclose(out[1:], out_changed[1:], atol=1e-5), "sample 0 leaked into the other samples"


def test_lengths_are_checked(model: torch.nn.Module) -> None:
    x, lengths = _batch(2)
    for bad in (torch.tensor([0, 3]), torch.tensor([T + 1, 3]), torch.tensor([3.0, 3.0]), torch.tensor([3])):
        with pytest.raises(AssertionError):
            model(x, bad)
    with pytest.raises(AssertionError, match="width"):
        model(torch.zeros(2, T, D + 1), lengths)


def test_every_parameter_gets_a_gradient(model: torch.nn.Module) -> None:
    model.train()
    model(*_batch(1)).sum().backward()  # batch 1 trains too
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_parameter_groups_partition_the_parameters(model: torch.nn.Module) -> None:
    groups = model.parameter_groups(weight_decay=1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter sits in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    gru = {id(p) for n, p in model.named_parameters() if "weight_ih" in n or "weight_hh" in n}
    assert len(gru) == 2 * 2 * len(SMALL.units())  # ih and hh, both directions, every layer
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    assert by_decay == {2 * SMALL.l2: gru, 1e-4: set(ids) - gru}
    torch.optim.Adam(groups, lr=1e-3)  # torch accepts them as they are


def test_weight_decay_equals_the_keras_l2_penalty(model: torch.nn.Module) -> None:
    # The gradient of l2 * sum(w^2) is 2 * l2 * w ...
    w = model.grus[0].weight_hh_l0.detach().clone().requires_grad_(True)
    (SMALL.l2 * (w**2).sum()).backward()
    assert torch.allclose(w.grad, 2 * SMALL.l2 * w.detach(), atol=1e-7)

    # ... so one SGD step with the groups' weight decay equals one step on the loss plus the explicit penalty.
    x, lengths = _batch(3)
    decayed, penalised = model, copy.deepcopy(model)
    opt = torch.optim.SGD(decayed.parameter_groups(weight_decay=0.0), lr=0.5, momentum=0.9)
    decayed(x, lengths).square().mean().backward()
    opt.step()
    opt = torch.optim.SGD(penalised.parameters(), lr=0.5, momentum=0.9)
    penalty = sum((p**2).sum() for n, p in penalised.named_parameters() if "weight_ih" in n or "weight_hh" in n)
    (penalised(x, lengths).square().mean() + SMALL.l2 * penalty).backward()
    opt.step()
    for (name, a), b in zip(decayed.named_parameters(), penalised.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), f"{name} differs between weight decay and the L2 penalty"


def test_the_head_learns() -> None:
    torch.manual_seed(0)
    b, t, d = 64, 20, 8
    lengths = torch.randint(5, t + 1, (b,))
    valid = torch.arange(t)[None, :] < lengths[:, None]  # (B, T)
    x = torch.randn(b, t, d)
    x[:, :, 0] += torch.where(torch.rand(b) < 0.5, -1.0, 1.0)[:, None]  # (B,) -> (B, 1): a per-sample shift
    x = x * valid[:, :, None]  # zero-padded
    y = ((x[:, :, 0].sum(dim=1) / lengths) > 0).long()  # class: sign of the mean of feature 0 over valid frames
    net = build(BiGruArchitecture(layers=1, base_units=16, final_units=16, dropout=0.0, l2=0.0), (t, d), 2)
    opt = torch.optim.Adam(net.parameter_groups(weight_decay=0.0), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x, lengths), y).backward()
        opt.step()
    with torch.no_grad():
        accuracy = (net.eval()(x, lengths).argmax(dim=1) == y).float().mean().item()
    assert accuracy >= 0.9, f"training accuracy {accuracy:.2f} after 60 steps"
