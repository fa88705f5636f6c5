"""BiGRU head over frozen frame features, after Ahmadianshalchi et al. (2026).

Frames (B, T, D) from a frozen encoder (DistilHuBERT in the paper, D = 768), zero-padded to a
common T, with their true lengths (B,):

    dropout on the frames -> masking of padded frames -> LayerNorm over D
    -> bidirectional GRU layers, units spaced linearly from base to final (`arch.units()`)
    -> final hidden states of the last layer, both directions -> Linear -> logits

The paper's Keras model masks padded frames (Masking) so its GRUs skip them; here every GRU
reads a PackedSequence, so no layer ever sees a padded frame and the padding length cannot
change a sample's output. Keras' last GRU (return_sequences=False) returns its final state:
for a bidirectional layer the forward state after the last valid frame and the backward state
after the first frame, which is exactly h_n of a packed nn.GRU. Keras' GRU default
(reset_after=True) applies the reset gate after the recurrent matmul, as torch's nn.GRU does.

The paper's L2 regulariser on the GRU weights becomes per-group weight decay, see
`BiGruHead.parameter_groups`. Softmax is left to the loss and to prediction: this returns logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from nas.ops.frames import check_frames, frame_width
from search_spaces.bigru import BiGruArchitecture

_GRU_WEIGHTS = ("weight_ih", "weight_hh")  # torch's names for the input and recurrent matrices of nn.GRU


class BiGruHead(nn.Module):
    """(B, T, D) zero-padded frames + (B,) lengths -> (B, n_classes) logits."""

    def __init__(self, arch: BiGruArchitecture, input_shape: tuple[int, int], n_classes: int) -> None:
        super().__init__()
        d = frame_width(input_shape)
        assert n_classes >= 2, f"need at least 2 classes, got {n_classes}"
        self.arch = arch
        self.input_shape = tuple(input_shape)
        self.dropout = nn.Dropout(arch.dropout)
        self.norm = nn.LayerNorm(d)  # per frame, over the feature axis D
        grus = []
        width = d
        for units in arch.units():
            grus.append(nn.GRU(width, units, batch_first=True, bidirectional=True))
            width = 2 * units  # forward and backward outputs, concatenated, feed the next layer
        self.grus = nn.ModuleList(grus)
        self.classifier = nn.Linear(width, n_classes)  # width = 2 * units of the last layer

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = check_frames(x, lengths, self.input_shape[1])  # (B, T) bool

        x = self.dropout(x)  # (B, T, D), elementwise, as Keras' Dropout on the frame sequence
        x = x * valid[:, :, None]  # (B, T, D): padded frames are exactly zero
        x = self.norm(x)  # (B, T, D); padded frames become the LayerNorm bias, but no GRU reads them

        # Packing keeps only the valid frames of each sample; pack_padded_sequence wants lengths on the CPU.
        seq: PackedSequence = pack_padded_sequence(x, lengths.cpu().long(), batch_first=True, enforce_sorted=False)
        for gru in self.grus:
            seq, h_n = gru(seq)  # PackedSequence of (sum(lengths), 2H) outputs; h_n (2, B, H) in the input's order
        # h_n[0]: forward state after each sample's last valid frame; h_n[1]: backward state after its first frame.
        pooled = torch.cat([h_n[0], h_n[1]], dim=1)  # (2, B, H) -> (B, 2H)
        return self.classifier(pooled)  # (B, 2H) -> (B, n_classes)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer param groups: the paper's L2 on the GRU weight matrices, `weight_decay` on the rest.

        Keras' L2 regulariser adds l2 * sum(w^2) to the loss, whose gradient is 2 * l2 * w. The
        coupled weight decay of torch's SGD, Adam and RMSprop adds weight_decay * w to the gradient
        before the update (momentum, moments and all), so weight_decay = 2 * l2 trains exactly as the
        Keras model does. (AdamW's decoupled decay is a different thing: use a coupled optimizer.)
        Only the weight matrices are regularised, as Keras' kernel_regularizer and recurrent_regularizer
        do; GRU biases join the other parameters.
        """
        gru_weights, others = [], []
        for name, p in self.named_parameters():
            is_gru_weight = name.startswith("grus.") and any(w in name.rsplit(".", 1)[-1] for w in _GRU_WEIGHTS)
            (gru_weights if is_gru_weight else others).append(p)
        return [
            {"params": gru_weights, "weight_decay": 2 * self.arch.l2},
            {"params": others, "weight_decay": weight_decay},
        ]


def build(arch: BiGruArchitecture, input_shape: tuple[int, int], n_classes: int) -> nn.Module:
    return BiGruHead(arch, input_shape, n_classes)
