"""The reference emoDARTS search step (github.com/jayaneetha/emoDARTS), timed as benchmarks/darts_step.py times ours.

The reference is not part of this repository and must not become part of it: `measure_reference` imports it
from a clone the user names (`git clone https://github.com/jayaneetha/emoDARTS /tmp/emoDARTS`; the clone or
its `emoDARTS/` folder), inside the benchmark's child process only. Nothing is written to that clone: no
bytecode is cached, and only modules that write nothing on import are loaded (its search.py, which opens
TensorBoard and log files and asks for CUDA, is not; what it does is repeated below).

Built as its search.py builds it, at our configuration (darts_step.CONFIGS): `SearchCNNController(1, C=8,
4 classes, n_layers=4, nn.CrossEntropyLoss(), n_nodes=4, stem_multiplier=3, n_layers_rnn=2, n_nodes_rnn=4,
device_ids=[cpu])`, batch 16. It only reads `len(device_ids)`: one device runs the network directly, while
its default (every CUDA device: none here) would take the multi-GPU scatter path. RNN_PRIMITIVES is set to
"all" (its default: every SeqNN op). Its SGD for the weights, Adam (betas 0.5, 0.999) for the alphas and
`Architect(model, w_momentum, w_weight_decay)` take the defaults of its config.py's SearchConfig, read from
its parser at run time: w_lr 0.025, momentum 0.9, weight decay 3e-4, grad clip 5, alpha lr 3e-4, alpha weight
decay 1e-3, the same as our DartsOptions.

The steps, as in its search.py's `train` (its metrics and logging left out):
- weight: zero_grad, forward, CrossEntropyLoss, backward, clip_grad_norm_(weights, 5), SGD step.
- arch-2nd: alpha_optim.zero_grad(), `architect.unrolled_backward(x, y, val_x, val_y, w_lr, w_optim)`, Adam
  step. That keeps a deep copy of the whole network (`v_net`) for the virtual step.
- arch-1st: the reference has no first-order mode (`unrolled_backward` always takes the virtual step and the
  finite-difference Hessian term, and xi = 0 would still pay for both). Timed as DARTS' first order with its
  own network and optimizers: the alphas' gradient of the validation loss at the current weights
  (`torch.autograd.grad` on the alphas alone, as our Architect does: quark0/darts' `loss.backward()` would
  also compute the weights' gradients), then the Adam step; its Architect (with `v_net`) exists, as in a
  search.

Where the reference's network differs from ours at the same nominal configuration:
- CNN edges mix 8 ops, not 9: its genotypes.PRIMITIVES leave out conv_7x1_1x7 (its ops.py defines it).
- Its SeqNN cells read the CNN output average-pooled to one (batch, 128) vector: each nn.LSTM / nn.RNN gets
  that 2-D tensor, which torch reads as one unbatched sequence whose time steps are the batch's samples.
  Ours run (batch, T, 64) sequences. The first SeqNN cell reads the last two CNN cells' outputs with ops of
  one width, and each cell pools its concatenated nodes back to 128 features (AdaptiveAvgPool1d(128)) for
  the next cell and the classifier: that fits only when the last two CNN cells both output 128 channels, as
  at the paper's shape (C = 8, 4 cells, 4 nodes). The `demo` configuration (C = 4, 3 cells, 2 nodes: 16 and
  32 channels) fails in its first LSTM ("input.size(-1) must be equal to input_size. Expected 32, got 16"),
  so it has no reference row.
- Its attention ops reshape their final states, (2 x layers, 128), to (batch, -1): they run at batch 16 only.
  Its config.py's default batch (64) fails in them ("mat1 and mat2 shapes cannot be multiplied (64x264 and
  288x256)"); so does its default of 4 SeqNN cells differ from the paper's 2 used here.
- Dropout(0.3) after every cell; the Hessian term is multiplied by eps / 2 instead of divided by 2 eps.
- `cnn-only` is built with n_layers_rnn=0 and n_nodes_rnn=0: with SeqNN nodes but no SeqNN cells its SeqNN
  alphas would not be in the graph, and its architect's `torch.autograd.grad` refuses unused inputs.
- `paper-rc2` (recomputation is ours) is the reference's `paper`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from benchmarks.darts_step import CONFIGS, N_CLASSES, batches, time_steps
from nas.darts.memory import reset_peak_rss

# our configuration -> the reference's it is compared with
REFERENCE_CONFIGS = {"paper": "paper", "paper-rc2": "paper", "cnn-only": "cnn-only"}
_UNSUPPORTED = {
    "demo": "the reference's SeqNN cells need its last two CNN cells to output 128 channels each (demo: 16 and 32)",
}
_MODULES = ("models.search_cnn", "architect", "config")
# SearchConfig's options the step uses; their defaults are read from the reference's config.py
_HYPERPARAMETERS = ("w_lr", "w_momentum", "w_weight_decay", "w_grad_clip", "alpha_lr", "alpha_weight_decay")


def search_dir(path: Path) -> Path:
    """The folder holding the reference's search code: `path` itself or its `emoDARTS/` subfolder."""
    for folder in (path / "emoDARTS", path):
        if (folder / "architect.py").is_file() and (folder / "models" / "search_cnn.py").is_file():
            return folder.resolve()
    raise ValueError(
        f"{path}: neither it nor {path / 'emoDARTS'} holds emoDARTS' search code (architect.py, "
        "models/search_cnn.py); get it with `git clone https://github.com/jayaneetha/emoDARTS /tmp/emoDARTS`"
    )


def reference_config(config: str) -> tuple[str | None, str]:
    """(the reference's configuration compared with our `config`, or None; why none)."""
    return REFERENCE_CONFIGS.get(config), _UNSUPPORTED.get(config, f"no reference configuration for {config}")


def _import_reference(folder: Path) -> dict[str, ModuleType]:
    os.environ["RNN_PRIMITIVES"] = "all"  # read by its genotypes.py on import
    sys.dont_write_bytecode = True  # no __pycache__ in the user's clone
    sys.path.insert(0, str(folder))
    with contextlib.redirect_stdout(sys.stderr):  # genotypes.py prints its op list; stdout carries the result
        modules = {name: importlib.import_module(name) for name in _MODULES}
    for name, module in modules.items():  # its top-level names (config, models, ...) are common ones
        if not Path(module.__file__ or "").resolve().is_relative_to(folder):
            raise ImportError(f"{name} was imported from {module.__file__}, not from {folder}: a module shadows it")
    return modules


def measure_reference(reference: Path, config: str, mode: str, steps: int) -> dict[str, float]:
    """Run inside darts_step's subprocess: time `steps` steps of `mode` of the reference at the configuration
    it has for our `config`, as darts_step.measure times ours."""
    ref_config, why_not = reference_config(config)
    if ref_config is None:
        raise ValueError(f"the reference cannot run {config}: {why_not}")
    modules = _import_reference(search_dir(reference))
    search_config = modules["config"].SearchConfig
    parser = search_config.__new__(search_config).build_parser()  # its __init__ would parse our argv
    hp = {name: parser.get_default(name) for name in _HYPERPARAMETERS}

    torch.manual_seed(0)
    rss_start = reset_peak_rss()
    cfg = CONFIGS[ref_config]
    space = cfg.space
    controller = modules["models.search_cnn"].SearchCNNController
    model = controller(
        cfg.input_shape[0],
        space.init_channels,
        N_CLASSES,
        space.cnn_cells,
        nn.CrossEntropyLoss(),
        n_nodes=space.nodes,
        stem_multiplier=space.stem_multiplier,
        device_ids=[torch.device("cpu")],
        n_layers_rnn=space.seq_cells,
        n_nodes_rnn=space.nodes if space.seq_cells else 0,
    ).train()
    w_optim = torch.optim.SGD(model.weights(), hp["w_lr"], momentum=hp["w_momentum"], weight_decay=hp["w_weight_decay"])
    alpha_optim = torch.optim.Adam(
        model.alphas(), hp["alpha_lr"], betas=(0.5, 0.999), weight_decay=hp["alpha_weight_decay"]
    )
    architect = modules["architect"].Architect(model, hp["w_momentum"], hp["w_weight_decay"])
    x, y, val_x, val_y = batches(cfg)

    def weights() -> None:
        w_optim.zero_grad()
        loss = model.criterion(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.weights(), hp["w_grad_clip"])
        w_optim.step()

    def arch_second_order() -> None:
        alpha_optim.zero_grad()
        architect.unrolled_backward(x, y, val_x, val_y, hp["w_lr"], w_optim)
        alpha_optim.step()

    def arch_first_order() -> None:
        alpha_optim.zero_grad()
        alphas = list(model.alphas())
        for alpha, grad in zip(alphas, torch.autograd.grad(model.loss(val_x, val_y), alphas), strict=True):
            alpha.grad = grad
        alpha_optim.step()

    step = {"weight": weights, "arch-1st": arch_first_order, "arch-2nd": arch_second_order}[mode]
    timed = time_steps(weights, step, steps)
    return {**timed, "start_bytes": rss_start, "params": sum(p.numel() for p in model.weights())}
