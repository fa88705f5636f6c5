"""A pure-PyTorch Mamba block (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces"), interchangeable with `mamba_ssm.Mamba` of the authors' state-spaces/mamba package.

Why a second implementation: mamba-ssm's released versions import their compiled CUDA extension
(`selective_scan_cuda`) when the package is imported, so on a machine without CUDA not even
`import mamba_ssm` succeeds; a model that names its block could then be neither built, tested nor
served on a CPU. `Mamba` here has exactly the parameters of `mamba_ssm.Mamba` (names, shapes and the
order the constructor draws their random initial values in) and computes the same function as its
reference path, so a state dict saved on either path loads on the other, and with the same seed both
start from the same weights. `make_mamba` picks the CUDA kernels where they can run, this block
everywhere else.

The block maps (B, L, d_model) -> (B, L, d_model) causally: output t reads inputs 0..t only.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Steps of the scan whose intermediate states are kept at once: training stores the state (B, d_inner,
# d_state) only at chunk boundaries and recomputes a chunk's steps in the backward pass, so the scan
# needs O(L / chunk + chunk) states of memory rather than O(L) (Chen et al., 2016, "Training Deep Nets
# with Sublinear Memory Cost"). At B 32, d_inner 256, d_state 256 and L 800, one state is 8 MiB.
SCAN_CHUNK = 32


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """The selective scan as a plain loop over time: the equations of mamba-ssm's `selective_scan_ref`
    for a real A and input-dependent B and C, in the input's dtype (mamba's reference casts to float32).

    u, delta, z: (batch, d_inner, L); A: (d_inner, d_state); B, C: (batch, d_state, L); D: (d_inner,).
    delta is the step size after softplus. Returns (batch, d_inner, L).
    """
    batch, d_inner, length = u.shape
    # Zero-order hold for A, Euler for B (Gu & Dao, 2023, Section 3.4 / Algorithm 2).
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (batch, d_inner, L, d_state)
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # (batch, d_inner, L, d_state)
    state = A.new_zeros(batch, d_inner, A.shape[1])
    ys = []
    for i in range(length):
        state = delta_a[:, :, i] * state + delta_b_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, i]))
    y = torch.stack(ys, dim=2)  # L x (batch, d_inner) -> (batch, d_inner, L)
    out = y if D is None else y + u * D[:, None]
    return out if z is None else out * F.silu(z)


def _scan_chunk(
    state: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of the scan from `state` (batch, d_inner, d_state); u, delta (batch, d_inner, c) and
    B, C (batch, d_state, c). Returns y (batch, d_inner, c) and the state after the chunk's last step.

    Each step's discretised A and B u are formed from that step's (batch, d_inner) and (batch, d_state)
    slices rather than for the whole chunk up front: the same arithmetic, with one state-sized tensor
    less to write and read back per step. The slices come from `unbind`, whose backward stacks the
    steps' gradients once; indexing would allocate a whole chunk of zeros for every step's gradient.
    """
    ys = []
    steps = zip(delta.unbind(2), (delta * u).unbind(2), B.unbind(2), C.unbind(2), strict=True)
    for delta_i, delta_u_i, b_i, c_i in steps:  # (batch, d_inner), (batch, d_inner), (batch, d_state) x 2
        delta_a = torch.exp(delta_i[:, :, None] * A)  # (b, d, 1) * (d, n) -> (b, d, n)
        delta_b_u = delta_u_i[:, :, None] * b_i[:, None, :]  # (b, d, 1) * (b, 1, n) -> (b, d, n)
        state = torch.addcmul(delta_b_u, delta_a, state)  # delta_a * state + delta_b_u
        # A product and a sum rather than a matrix-vector bmm: measured faster on CPU, both ways.
        ys.append((state * c_i[:, None, :]).sum(dim=-1))  # (b, d, n) * (b, 1, n) summed over n -> (b, d)
    return torch.stack(ys, dim=2), state  # c x (batch, d_inner) -> (batch, d_inner, c)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """`selective_scan_reference` with every step vectorised over batch, d_inner and d_state, and without
    the reference's (batch, d_inner, L, d_state) tensors: states are formed step by step, and training
    keeps them only at chunk boundaries (`SCAN_CHUNK`). Same arguments and result.

    A loop over time rather than a parallel (log-depth) scan: on a CPU each step already keeps every
    core busy at realistic sizes, and a parallel scan would multiply the arithmetic and the memory.
    """
    length = u.shape[2]
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
    # In A's dtype, as in mamba's reference: under mixed precision A stays float32, and so does the state.
    state = A.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (batch, d_inner, d_state)
    ys = []
    for start in range(0, length, SCAN_CHUNK):
        chunk = slice(start, start + SCAN_CHUNK)
        args = (state, u[:, :, chunk], delta[:, :, chunk], A, B[:, :, chunk], C[:, :, chunk])
        y, state = checkpoint(_scan_chunk, *args, use_reentrant=False) if recompute else _scan_chunk(*args)
        ys.append(y)
    y = torch.cat(ys, dim=2)  # chunks of (batch, d_inner, c) -> (batch, d_inner, L)
    out = y if D is None else y + u * D[:, None]
    return out if z is None else out * F.silu(z)


class Mamba(nn.Module):
    """The Mamba block of `mamba_ssm.Mamba` (mamba_ssm/modules/mamba_simple.py), on any device.

    Same constructor arguments (those that shape or initialise parameters), same parameters, same
    initialisation: in_proj, conv1d, x_proj and out_proj keep torch's default init, dt_proj gets
    mamba's, A_log is S4D-real (Gu et al., 2022, "On the Parameterization and Initialization of
    Diagonal State Space Models") and D is one.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | Literal["auto"] = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: Literal["random", "constant"] = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        assert d_model >= 1 and d_state >= 1 and d_conv >= 1 and expand >= 1, (
            f"d_model, d_state, d_conv and expand must be positive, got {d_model}, {d_state}, {d_conv}, {expand}"
        )
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank

        # Modules are created in mamba's order, so that a seeded build draws the same initial weights.
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)  # -> x and the gate z
        self.conv1d = nn.Conv1d(  # depthwise; padding d_conv - 1 and keeping the first L outputs makes it causal
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)  # -> dt, B, C per step
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)

        # dt_proj's weight keeps the variance of dt at initialisation (mamba's dt_init_std).
        dt_init_std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        # Its bias makes softplus(bias), the initial step size, log-uniform in [dt_min, dt_max].
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

        # S4D-real: A[d, n] = -(n + 1) for every channel d, stored as its log.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)  # (d_inner, d_state)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(self.d_inner))  # the skip connection u * D
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        assert hidden_states.dim() == 3 and hidden_states.shape[2] == self.d_model, (
            f"expected (B, L, {self.d_model}), got {tuple(hidden_states.shape)}"
        )
        length = hidden_states.shape[1]
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, L, 2 d_inner) -> (B, 2 d_inner, L)
        x, z = xz.chunk(2, dim=1)  # each (B, d_inner, L)
        x = F.silu(self.conv1d(x)[:, :, :length])  # (B, d_inner, L + d_conv - 1) -> the causal (B, d_inner, L)

        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, d_inner, L) -> (B, L, d_inner) -> (B, L, dt_rank + 2 d_state)
        dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt)).transpose(1, 2)  # (B, L, d_inner) -> (B, d_inner, L)
        a = -torch.exp(self.A_log)  # (d_inner, d_state), negative: every state decays
        # B, C: (B, L, d_state) -> (B, d_state, L), the layout of mamba's scan
        y = selective_scan(x, delta, a, b.transpose(1, 2), c.transpose(1, 2), self.D, z)  # (B, d_inner, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, d_inner) -> (B, L, d_model)


def make_mamba(d_model: int, d_state: int, d_conv: int = 4, expand: int = 2) -> nn.Module:
    """`mamba_ssm.Mamba` (fused CUDA kernels) when mamba-ssm imports and CUDA is available, else `Mamba`.

    The CUDA block only runs on CUDA tensors; the two share their state dict, so weights trained on
    either load into the other.
    """
    if torch.cuda.is_available():
        try:
            from mamba_ssm import Mamba as CudaMamba
        except ImportError:
            pass
        else:
            return CudaMamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    return Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
