"""The Architect: updates the architecture parameters of a `Supernet` (DARTS' outer problem).

First order: the gradient of the validation loss at the current weights.
Second order (DARTS' unrolled gradient), with xi the weights' learning rate:

    w' = w - xi * (momentum * buf + dL_train(w, a)/dw + wd * w)          the step SGD would take
    grad_a = dL_val(w', a)/da - xi * H v,   v = dL_val(w', a)/dw'
    H v = d^2 L_train(w, a)/(da dw) . v ~= (dL_train(w+, a)/da - dL_train(w-, a)/da) / (2 eps)
    w+- = w +- eps * v,   eps = 0.01 / ||v||

(emoDARTS/pt.darts compute `(p - n) / 2. * eps`, i.e. multiply by eps / 2 instead of dividing
by 2 eps.) No network copy is made: the weights are moved in place and restored from one saved
copy of the weights, so the extra memory is a few copies of the weights, not of the network.
The architect leaves the network exactly as it found it (weights, BN running statistics, no
`.grad` on weights); only the alphas change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from nas.darts.supernet import Supernet
from search_spaces.darts import DartsOptions


@contextmanager
def _restored(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Yield copies of `tensors`, and put their values back on exit, whatever happened in between."""
    saved = [t.detach().clone() for t in tensors]
    try:
        yield saved
    finally:
        with torch.no_grad():
            for t, s in zip(tensors, saved, strict=True):
                t.copy_(s)


class _SameRandomness:
    """Every `with` block starts from the RNG state this was created with: dropout masks must match
    between the two finite-difference passes, or their difference is mostly dropout noise."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def __enter__(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)

    def __exit__(self, *exc: object) -> None:
        return None


class Architect:
    def __init__(
        self,
        net: Supernet,
        *,
        w_momentum: float,
        w_weight_decay: float,
        arch_lr: float,
        arch_weight_decay: float,
        second_order: bool,
        fd_radius: float = 0.01,
    ) -> None:
        """`fd_radius`: length of the finite-difference step eps * ||v|| (DARTS uses 0.01)."""
        self.net = net
        self.w_momentum = w_momentum
        self.w_weight_decay = w_weight_decay
        self.second_order = second_order
        self.fd_radius = fd_radius
        self.optimizer = torch.optim.Adam(net.alphas(), lr=arch_lr, betas=(0.5, 0.999), weight_decay=arch_weight_decay)

    @classmethod
    def from_options(cls, net: Supernet, options: DartsOptions) -> Architect:
        return cls(
            net,
            w_momentum=options.w_momentum,
            w_weight_decay=options.w_weight_decay,
            arch_lr=options.arch_lr,
            arch_weight_decay=options.arch_weight_decay,
            second_order=options.second_order,
        )

    def step(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        w_lr: float,
        w_optim: torch.optim.SGD,
    ) -> float:
        """One Adam step on the alphas; returns the validation loss (at w' for second order)."""
        alphas = self.net.alphas()
        with _restored(list(self.net.buffers())):  # BN running statistics: only weight steps update them
            if self.second_order:
                loss, grads = self.unrolled_gradient(train_x, train_y, val_x, val_y, w_lr, w_optim)
            else:
                loss = self.net.loss(val_x, val_y)
                grads = list(torch.autograd.grad(loss, alphas, materialize_grads=True))
        for alpha, grad in zip(alphas, grads, strict=True):
            alpha.grad = grad
        self.optimizer.step()
        return loss.item()

    def unrolled_gradient(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        w_lr: float,
        w_optim: torch.optim.SGD,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(L_val(w', a), DARTS' second-order gradient of it w.r.t. each alpha); see the module doc."""
        weights, alphas = list(self.net.weights()), self.net.alphas()
        with _restored(weights):
            grads = torch.autograd.grad(self.net.loss(train_x, train_y), weights, materialize_grads=True)
            with torch.no_grad():  # w <- w': the step w_optim would take from here
                for w, g in zip(weights, grads, strict=True):
                    step = g.add(w, alpha=self.w_weight_decay)
                    momentum = w_optim.state.get(w, {}).get("momentum_buffer")
                    if momentum is not None:  # SGD starts its buffer at the first step
                        step.add_(momentum, alpha=self.w_momentum)
                    w.sub_(step, alpha=w_lr)
            del grads, step
            loss = self.net.loss(val_x, val_y)
            grads = torch.autograd.grad(loss, [*alphas, *weights], materialize_grads=True)
            loss = loss.detach()  # drops the graph: what an alphas-only backward leaves in it is still large
        dalpha, dw = grads[: len(alphas)], grads[len(alphas) :]
        hessian = self.hessian_vector_product(dw, train_x, train_y)
        return loss, [da - w_lr * h for da, h in zip(dalpha, hessian, strict=True)]

    def hessian_vector_product(
        self, vector: Sequence[torch.Tensor], train_x: torch.Tensor, train_y: torch.Tensor
    ) -> list[torch.Tensor]:
        """d/da (dL_train(w, a)/dw . vector), by central differences along `vector` (one tensor per
        weight) at the current weights, which are left unchanged."""
        weights, alphas = list(self.net.weights()), self.net.alphas()
        norm = torch.sqrt(sum(v.double().square().sum() for v in vector)).item()  # ||vector||, no concatenated copy
        if norm == 0:
            return [torch.zeros_like(a) for a in alphas]
        eps = self.fd_radius / norm
        grads = []
        with _restored(weights):
            same_dropout = _SameRandomness(train_x.device)
            for sign in (1, -2):  # w + eps v, then w - eps v
                with torch.no_grad():
                    for w, v in zip(weights, vector, strict=True):
                        w.add_(v, alpha=sign * eps)
                with same_dropout:
                    loss = self.net.loss(train_x, train_y)
                grads.append(torch.autograd.grad(loss, alphas, materialize_grads=True))
                del loss  # before the next forward: an alphas-only backward leaves much of the graph alive
        return [(plus - minus) / (2 * eps) for plus, minus in zip(*grads, strict=True)]
