from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from nas.ops.mamba import SCAN_CHUNK, Mamba, make_mamba, selective_scan, selective_scan_reference

# state_dict of mamba_ssm.Mamba(d_model=16, d_state=8), in order, as its constructor registers the
# parameters (state-spaces/mamba, mamba_ssm/modules/mamba_simple.py, releases 1.x to 2.3): its own
# parameters A_log and D first, then those of its submodules. d_inner = 2 * 16, dt_rank = ceil(16 / 16).
MAMBA_SSM_STATE_DICT = [
    ("A_log", (32, 8)),
    ("D", (32,)),
    ("in_proj.weight", (64, 16)),
    ("conv1d.weight", (32, 1, 4)),
    ("conv1d.bias", (32,)),
    ("x_proj.weight", (1 + 2 * 8, 32)),
    ("dt_proj.weight", (32, 1)),
    ("dt_proj.bias", (32,)),
    ("out_proj.weight", (16, 32)),
]


def _scan_inputs(
    batch: int = 2, d_inner: int = 6, d_state: int = 5, length: int = 2 * SCAN_CHUNK + 7, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random float64 scan inputs in mamba's layout; the length ends in a partial chunk."""
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, d_inner, length, generator=g, dtype=torch.float64),
        "delta": F.softplus(torch.randn(batch, d_inner, length, generator=g, dtype=torch.float64)),
        "A": -torch.rand(d_inner, d_state, generator=g, dtype=torch.float64) * 4,
        "B": torch.randn(batch, d_state, length, generator=g, dtype=torch.float64),
        "C": torch.randn(batch, d_state, length, generator=g, dtype=torch.float64),
        "D": torch.randn(d_inner, generator=g, dtype=torch.float64),
        "z": torch.randn(batch, d_inner, length, generator=g, dtype=torch.float64),
    }


@pytest.mark.parametrize("with_d", [True, False])
@pytest.mark.parametrize("with_z", [True, False])
def test_vectorised_scan_equals_the_reference_loop(with_d: bool, with_z: bool) -> None:
    inputs = _scan_inputs()
    inputs["D"] = inputs["D"] if with_d else None
    inputs["z"] = inputs["z"] if with_z else None
    out = selective_scan(**inputs)
    assert out.shape == inputs["u"].shape
    torch.testing.assert_close(out, selective_scan_reference(**inputs), rtol=1e-10, atol=1e-12)


def test_scan_gradients_equal_the_reference_loop() -> None:
    # Training recomputes each chunk in the backward pass; its gradients must be the reference's.
    inputs = {name: t.requires_grad_() for name, t in _scan_inputs(length=SCAN_CHUNK + 3).items()}
    weights = torch.randn(inputs["u"].shape, dtype=torch.float64)  # a random linear loss
    grads = torch.autograd.grad((selective_scan(**inputs) * weights).sum(), list(inputs.values()))
    expected = torch.autograd.grad((selective_scan_reference(**inputs) * weights).sum(), list(inputs.values()))
    for name, got, want in zip(inputs, grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"gradient of {name}")


def test_parameters_are_those_of_mamba_ssm() -> None:
    block = Mamba(d_model=16, d_state=8)
    assert [(name, tuple(p.shape)) for name, p in block.state_dict().items()] == MAMBA_SSM_STATE_DICT
    assert (block.d_inner, block.dt_rank) == (32, 1)
    assert Mamba(d_model=40, d_state=8).dt_rank == 3  # ceil(40 / 16)


def test_a_seeded_block_draws_mamba_ssm_initial_weights() -> None:
    # mamba_ssm.Mamba's constructor, step by step (mamba_simple.py): default-initialised modules in this
    # order, dt_proj's weight and bias redrawn, then the deterministic A_log and D, then out_proj.
    d_model, d_state, d_inner, dt_rank = 16, 8, 32, 1
    torch.manual_seed(3)
    expected = {
        "in_proj.weight": torch.nn.Linear(d_model, 2 * d_inner, bias=False).weight,
        **{f"conv1d.{k}": v for k, v in torch.nn.Conv1d(d_inner, d_inner, 4, groups=d_inner).state_dict().items()},
        "x_proj.weight": torch.nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False).weight,
    }
    torch.nn.Linear(dt_rank, d_inner)  # dt_proj, whose default init is drawn and then replaced
    expected["dt_proj.weight"] = torch.empty(d_inner, dt_rank).uniform_(-(dt_rank**-0.5), dt_rank**-0.5)
    dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
    expected["dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))
    expected["out_proj.weight"] = torch.nn.Linear(d_inner, d_model, bias=False).weight

    torch.manual_seed(3)
    block = Mamba(d_model=d_model, d_state=d_state)
    for name, want in expected.items():
        torch.testing.assert_close(block.state_dict()[name], want.detach(), rtol=0, atol=0, msg=name)


def test_a_log_d_and_dt_follow_mambas_initialisation() -> None:
    block = Mamba(d_model=16, d_state=8)
    assert torch.equal(block.A_log, torch.log(torch.arange(1, 9, dtype=torch.float32)).repeat(32, 1))
    assert torch.equal(block.D, torch.ones(32))
    step = F.softplus(block.dt_proj.bias.detach())  # the initial step sizes
    assert bool((step >= 0.001 * (1 - 1e-5)).all()) and bool((step <= 0.1 * (1 + 1e-5)).all())
    assert step.max() / step.min() > 5, "the step sizes should spread log-uniformly over [dt_min, dt_max]"
    assert bool((block.dt_proj.weight.abs() <= 1.0).all())  # uniform in +-dt_rank ** -0.5, dt_rank 1
    floored = Mamba(d_model=16, d_state=8, dt_min=1e-6, dt_max=1e-5, dt_init="constant")
    torch.testing.assert_close(F.softplus(floored.dt_proj.bias.detach()), torch.full((32,), 1e-4))  # the floor
    assert torch.equal(floored.dt_proj.weight, torch.ones(32, 1))


def test_block_is_mambas_reference_path() -> None:
    # mamba_simple.py's forward without the fused kernels: in_proj, causal depthwise conv, SiLU,
    # x_proj into (dt, B, C), softplus(dt_proj), the selective scan gated by SiLU(z), out_proj.
    torch.manual_seed(0)
    block = Mamba(d_model=8, d_state=4).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    xz = (x @ block.in_proj.weight.T).transpose(1, 2)
    u, z = xz.chunk(2, dim=1)  # (2, 16, 11) each: d_inner = 16
    u = F.silu(F.conv1d(u, block.conv1d.weight, block.conv1d.bias, padding=3, groups=16)[:, :, :11])
    dt, b, c = (u.transpose(1, 2) @ block.x_proj.weight.T).split([1, 4, 4], dim=-1)
    delta = F.softplus(dt @ block.dt_proj.weight.T + block.dt_proj.bias).transpose(1, 2)
    a = -torch.exp(block.A_log)
    y = selective_scan_reference(u, delta, a, b.transpose(1, 2), c.transpose(1, 2), block.D, z)
    with torch.no_grad():
        torch.testing.assert_close(block(x), y.transpose(1, 2) @ block.out_proj.weight.T)


def test_the_block_is_causal() -> None:
    torch.manual_seed(0)
    block = Mamba(d_model=8, d_state=4).eval()
    x = torch.randn(2, 2 * SCAN_CHUNK + 5, 8)
    t = SCAN_CHUNK + 2  # in the second chunk
    changed = x.clone()
    changed[:, t] += 3.0
    with torch.no_grad():
        out, out_changed = block(x), block(changed)
    assert out.shape == x.shape
    assert torch.equal(out[:, :t], out_changed[:, :t]), "an input changed outputs before it"
    assert not torch.allclose(out[:, t:], out_changed[:, t:]), "an input changed nothing at or after it"


def test_make_mamba_falls_back_to_the_cpu_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # the import fails, as it does without mamba-ssm
    for cuda in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        block = make_mamba(16, 8)
        assert isinstance(block, Mamba) and (block.d_model, block.d_state, block.d_conv) == (16, 8, 4)
