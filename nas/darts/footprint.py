"""How much memory an emoDARTS search step needs, counted from the search's shape alone (no torch, no supernet).

The estimate is analytic, so the controller checks it at submission in microseconds and the worker again
against the device it was given, without building the supernet (which took 6.7-12.5 s at the paper's
configuration on 2 CPU cores). It counts, per sample and in float32, the tensors autograd keeps for the
backward pass of `nas.darts.supernet.Supernet` as that module computes its forward (shared ops once per
state, `none` never, depthwise outputs recomputed, BN scaled by the architecture weight), and the weights:

- weights, their gradients, SGD momentum: 3 copies;
- second order: the architect's saved copy of the weights, the virtual-step gradient, then the
  validation gradient kept through the finite differences: 3 more copies;
- alphas with their gradients and Adam's two moments (negligible).

The per-op counts below were read off the supernet's forward and checked against what
`nas.darts.memory.measure_search_memory` measures (autograd's saved tensors, by storage) on several shapes;
tests/darts/test_memory.py keeps the two within a stated factor, and the measured one within a factor of the
peak resident memory of real steps. `ACTIVATION_MARGIN` covers what backward needs on top (the gradients of
one cell's states, a recomputed depthwise map) and the allocator's fragmentation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from nas.errors import ResourceError
from search_spaces.darts import EmoDartsSpace

ACTIVATION_MARGIN = 1.3
WEIGHT_COPIES = 3  # weights, gradients, momentum
SECOND_ORDER_COPIES = 3  # saved weights, virtual-step gradient, validation gradient
FLOAT = 4  # bytes of a float32
INDEX = 8  # bytes of an int64 (max-pool indices)
GB = 1024**3

# Feature maps kept for backward per CNN op with parameters, in maps of the op's output size: a separable
# conv keeps the BN inputs of its two halves and the ReLU between them (its depthwise outputs are
# recomputed), a dilated conv its BN input. conv_7x1_1x7 and a stride-2 skip_connect are counted apart.
CNN_OP_MAPS = {"sep_conv_3x3": 3, "sep_conv_5x5": 3, "dil_conv_3x3": 1, "dil_conv_5x5": 1}

# SeqNN ops, per edge and per sample, in units of one (T, H) state, fitted to what autograd keeps for the
# supernet's SeqNN cells on the CPU (oneDNN's recurrent workspaces keep the gates of every step: an LSTM
# layer's are four times an RNN layer's, with its cell states): half a state for the op's output, a recurrent
# layer's workspace, and for attention 6 states (projections, their contiguous copies, the heads' output,
# the layer norm's input and output) plus heads x T x T for the softmax.
RECURRENT_OUTPUT_STATES = 0.5
RECURRENT_LAYER_STATES = {"rnn": 2.0, "lstm": 16.5}
ATTENTION_STATES = 6


@dataclass(frozen=True)
class MemoryEstimate:
    parameter_bytes: int  # weights and alphas with their gradients, optimiser states, second-order copies
    activation_bytes: int  # kept for backward at `batch_size`, with ACTIVATION_MARGIN
    total_bytes: int
    human: str
    batch_size: int
    activation_bytes_per_sample: int  # with the margin
    second_order_bytes: int  # part of parameter_bytes that first order would not need


@dataclass
class _Count:
    """Weights (elements) and activations (bytes per sample) of a supernet, added up layer by layer."""

    weights: int = 0
    per_sample: int = 0


def _seq_op(name: str, hidden: int, steps: int, count: _Count) -> None:
    if name in ("none", "skip_connect"):  # none is never computed; skip's input is a state kept anyway
        return
    kind, _, rest = name.partition("_")
    layers = int(rest.removeprefix("att_"))
    count.weights += layers * (4 if kind == "lstm" else 1) * (2 * hidden * hidden + 2 * hidden)
    states = RECURRENT_OUTPUT_STATES + layers * RECURRENT_LAYER_STATES[kind]
    if rest.startswith("att_"):
        heads = next(h for h in (4, 2, 1) if hidden % h == 0)  # as nas.ops.seq.SelfAttention chooses
        count.weights += 4 * hidden * hidden + 6 * hidden  # qkv, proj, layer norm
        states += ATTENTION_STATES
        count.per_sample += FLOAT * heads * steps * steps
    count.per_sample += int(FLOAT * states * steps * hidden)


def _cnn_cell(
    space: EmoDartsSpace,
    channels: tuple[int, int, int],
    sizes: tuple[tuple[int, int], tuple[int, int]],
    reduction: tuple[bool, bool],
    recompute: bool,
    count: _Count,
) -> None:
    """One `SearchCell`: c_pp, c_p, c channels; s0 of size `sizes[0]`, s1 (and the cell's input grid) of
    `sizes[1]`; (reduction_prev, reduction)."""
    c_pp, c_p, c = channels
    (h0, w0), (h, w) = sizes
    reduction_prev, is_reduction = reduction
    k = space.partial_channels
    active = c // k
    area = h * w
    # pre0: ReLU output (after a reduction, FactorizedReduce reads its grids: views of it, but for odd sizes
    # the offset grid is a padded quarter-size copy); the BN input; pre1 alike.
    count.weights += (c_pp + c_p) * c
    offset_grid = c_pp * -(-h0 // 2) * -(-w0 // 2) if reduction_prev and (h0 % 2 or w0 % 2) else 0
    count.per_sample += FLOAT * (c_pp * h0 * w0 + offset_grid + c * area)
    count.per_sample += FLOAT * (c_p * area + c * area)

    ops = [op for op in space.cnn_ops if op != "none"]
    out_h, out_w = (-(-h // 2), -(-w // 2)) if is_reduction else (h, w)
    for j in range(space.nodes + 1):  # states 0 .. nodes feed edges
        stride = 2 if is_reduction and j < 2 else 1
        in_h, in_w = (h, w) if j < 2 else (out_h, out_w)
        to_h, to_w = (-(-in_h // 2), -(-in_w // 2)) if stride == 2 else (in_h, in_w)
        state, relu, out = c * in_h * in_w, active * in_h * in_w, active * to_h * to_w
        # Once per state: the ReLU of its active channels and its polyphase split (nas.ops.cnn.Polyphase: with
        # stride 1 the four components stacked, a copy; with stride 2 the grids, views of the ReLU but for the
        # padded offset grid of odd sizes), the pools (BN input and output; max pool's indices).
        shared = FLOAT * relu
        dilated = any(op.startswith("dil_conv") for op in ops)
        if stride == 1 and dilated:
            shared += FLOAT * active * -(-in_h // 2) * -(-in_w // 2) * 4
        elif stride == 2 and (dilated or "skip_connect" in ops) and (in_h % 2 or in_w % 2):
            shared += FLOAT * out
        kept_state = stride == 1 and "skip_connect" in ops  # identity: the weighted sum keeps the state
        for pool in ("max_pool_3x3", "avg_pool_3x3"):
            if pool in ops:
                shared += 2 * FLOAT * out + (INDEX * out if pool == "max_pool_3x3" else 0)
                kept_state = True  # the pool keeps its input
        if k > 1 and stride == 2:  # PC-DARTS bypass: a 2x2 max pool of the other channels, with indices
            shared += INDEX * (c - active) * to_h * to_w
            kept_state = True
        count.per_sample += shared + (FLOAT * state if kept_state else 0)
        # Per edge leaving the state (node i reads states 0 .. i + 1): the ops with parameters.
        edges = space.nodes - max(j - 1, 0)
        for op in ops:
            if op in CNN_OP_MAPS:
                size = int(op[-1])
                depthwise = active * size * size
                count.weights += edges * (2 if op.startswith("sep") else 1) * (depthwise + active * active)
                kept = CNN_OP_MAPS[op] * out
            elif op == "conv_7x1_1x7":
                count.weights += edges * 2 * 7 * active * active
                kept = active * in_h * to_w + out  # the 1x7 conv's output, then the BN input
            elif op == "skip_connect" and stride == 2:  # FactorizedReduce: the BN input (its grids are the state's)
                count.weights += edges * active * active
                kept = out
            else:
                continue
            if not recompute:
                count.per_sample += edges * FLOAT * kept


def _supernet(space: EmoDartsSpace, input_shape: tuple[int, int, int], n_classes: int, recompute_cells: int) -> _Count:
    """Weights and per-sample activations of `Supernet(space, input_shape, n_classes, recompute_cells=...)`,
    walking its layers as `nas.ops.CellNetwork` builds them."""
    count = _Count()
    c_in, f, t = input_shape
    c_stem = space.stem_multiplier * space.init_channels
    count.weights += c_in * c_stem * 9 + 2 * c_stem  # stem conv and its affine BN
    count.per_sample += FLOAT * (c_in + c_stem) * f * t  # the stem's input and its BN input

    c_pp, c_p, c = c_stem, c_stem, space.init_channels
    sizes = ((f, t), (f, t))
    reduction_prev = False
    for i in range(space.cnn_cells):
        reduction = i in space.reduction_cells
        if reduction:
            c *= 2
        _cnn_cell(space, (c_pp, c_p, c), sizes, (reduction_prev, reduction), i < recompute_cells, count)
        if reduction:
            f, t = -(-f // 2), -(-t // 2)
        c_pp, c_p, reduction_prev = c_p, space.nodes * c, reduction
        sizes = (sizes[1], (f, t))

    hidden, steps, nodes = space.seq_hidden, t, space.nodes
    if not space.seq_cells:
        count.weights += c_p * n_classes + n_classes
        return count
    # The bridge keeps the (T', C' * F') copy of the CNN output; its output is the first cells' both inputs.
    count.weights += c_p * f * hidden + hidden
    count.per_sample += FLOAT * (c_p * f * steps + steps * hidden)
    for cell in range(space.seq_cells):
        for _edge in range(nodes * (nodes + 3) // 2):
            for op in space.seq_ops:
                _seq_op(op, hidden, steps, count)
        count.weights += nodes * hidden * hidden + hidden  # the output Linear
        # The nodes that feed later nodes, the concatenation the output Linear keeps, and the cell's output
        # (the next cell's input; the last one's is only pooled).
        later = 1 if cell < space.seq_cells - 1 else 0
        count.per_sample += FLOAT * (nodes - 1 + nodes + later) * steps * hidden
    count.weights += hidden * n_classes + n_classes
    return count


@functools.lru_cache(maxsize=256)
def estimate_search_memory(
    space: EmoDartsSpace,
    input_shape: tuple[int, int, int],
    n_classes: int,
    batch_size: int,
    second_order: bool,
    recompute_cells: int = 0,
) -> MemoryEstimate:
    """Memory of a search step, float32, of a `Supernet(space, input_shape, n_classes,
    recompute_cells=recompute_cells)` at `batch_size`; counted, not measured (microseconds)."""
    count = _supernet(space, input_shape, n_classes, recompute_cells)
    edges = space.nodes * (space.nodes + 3) // 2
    alphas = edges * (2 * len(space.cnn_ops) + (len(space.seq_ops) if space.seq_cells else 0))
    return step_memory(FLOAT * count.weights, FLOAT * alphas, 0, count.per_sample, batch_size, second_order)


def step_memory(
    weight_bytes: float,
    alpha_bytes: float,
    fixed_activation_bytes: float,
    activation_bytes_per_sample: float,
    batch_size: int,
    second_order: bool,
) -> MemoryEstimate:
    """A search step's memory from its parts, counted or measured: weights with their gradients and optimiser
    states, architecture weights, and the activations autograd keeps (a fixed part and a part per sample)."""
    per_sample = ACTIVATION_MARGIN * activation_bytes_per_sample
    activation = ACTIVATION_MARGIN * fixed_activation_bytes + per_sample * batch_size
    second = SECOND_ORDER_COPIES * weight_bytes if second_order else 0
    parameters = WEIGHT_COPIES * weight_bytes + 4 * alpha_bytes + second  # alphas: value, grad, 2 Adam moments
    total = parameters + activation
    human = (
        f"about {total / GB:.1f} GB for batch {batch_size} ({'second' if second_order else 'first'} order): "
        f"{activation / GB:.1f} GB activations ({per_sample / GB:.2f} GB per sample), "
        f"{parameters / GB:.2f} GB for {weight_bytes / FLOAT / 1e6:.1f}M weights with gradients and optimiser states"
    )
    return MemoryEstimate(
        parameter_bytes=int(parameters),
        activation_bytes=int(activation),
        total_bytes=int(total),
        human=human,
        batch_size=batch_size,
        activation_bytes_per_sample=int(per_sample),
        second_order_bytes=int(second),
    )


def check_fits(estimate: MemoryEstimate, limit_bytes: int, where: str) -> None:
    """Raise ResourceError, with concrete ways to fit, if the search needs more than `limit_bytes`, which
    `where` names (e.g. "available on cuda:0", "on the largest node of the Ray cluster")."""
    if estimate.total_bytes <= limit_bytes:
        return
    raise ResourceError(
        f"this search needs about {estimate.total_bytes / GB:.1f} GB but only {limit_bytes / GB:.1f} GB is "
        f"{where} ({estimate.human}); try " + "; ".join(ways_to_fit(estimate, limit_bytes))
    )


def ways_to_fit(estimate: MemoryEstimate, limit_bytes: int) -> list[str]:
    """Changes to the search that make it need less memory, the batch size that fits first when one does."""
    tips = []
    if estimate.activation_bytes_per_sample:
        fixed = estimate.total_bytes - estimate.activation_bytes_per_sample * estimate.batch_size
        largest = math.floor((limit_bytes - fixed) / estimate.activation_bytes_per_sample)
        if 1 <= largest < estimate.batch_size:
            tips.append(f"batch_size={largest} (fits; activations grow linearly with the batch)")
    if estimate.second_order_bytes:
        tips.append(f"second_order=false (saves {estimate.second_order_bytes / GB:.1f} GB of weight copies)")
    return [
        *tips,
        "partial_channels=4 (only 1/4 of the channels go through the mixed CNN ops)",
        "Supernet(recompute_cells=2) (the two widest CNN cells recompute their edges in backward, "
        "for one more forward of them)",
        "fewer nodes or cnn_cells / seq_cells, or fewer candidate ops (every op runs on every edge)",
        "a smaller input (features.pool_to)",
    ]
