"""The MACNN network with ICASA attention of Li et al. (2026), on one segment's map.

    (B, T, D) frames (Li et al.: a 2 s segment, 200 frames of 39 MFCCs), padding zeroed
    -> (B, 1, F = D, T) map
    -> Conv1a (10, 2) and Conv1b (2, 8), each conv -> BN -> ReLU, concatenated -> (B, 16, F - 1, T - 1)
    -> Conv2 .. Conv5, 3x3 conv -> BN -> ReLU, a 2x2 max pool after Conv2 and Conv3, an attention module
       (ICASA, or the ICA / SA ablation) on the blocks in `attention_after` -> (B, 80, F', T')
    -> multi-head attention, heads fused by a weighted average and a linear map, + residual, layer norm
    -> mean over (F', T') -> dropout -> FC -> logits (B, n_classes)

The modules read top to bottom: ICA, SA (with its channel shuffle), ICASA, the head-fusion attention, then
MACNN. Where Li et al. leave a detail open, the choice is said where it is made. The network reads frame
sequences, so that the segment protocol (`nas.features.spec.Segments`) can cut them into 2 s windows and
score an utterance by the mean of its windows; without segments it reads the whole padded sequence as one map.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from nas.ops.frames import check_frames, frame_width
from search_spaces.macnn import POOLED_CONVS, MacnnArchitecture


class ImprovedCoordinateAttention(nn.Module):
    """ICA (Li et al., 2026, 2.2.1): coordinate attention (Hou et al., 2021) whose shared 1x1 conv becomes a
    depthwise-separable conv. (B, C, F, T) -> (B, C, F, T).

    Frequency rows are Li et al.'s "vertical" axis H and frames the "horizontal" axis W.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        # Hou et al. (2021) keep at least 8 hidden channels so that narrow layers are not squeezed to nothing;
        # with r = 32 every MACNN layer (16 to 80 channels) gets 8.
        hidden = max(8, channels // reduction)
        # Li et al. leave the depthwise kernel open: 3 along the pooled strip, as in MobileNet's depthwise
        # convs (Howard et al., 2017). As their Eq. 8 convolves the concatenated strip, the last frequency
        # row and the first frame share one window at the seam. No biases: batch norm follows.
        self.depthwise = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, hidden, 1, bias=False)
        # Eq. 8 writes the activation and the conv as one composition; the order is Hou et al.'s:
        # conv -> batch norm -> h-swish (Howard et al., 2019).
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.Hardswish()
        self.gate_freq = nn.Conv2d(hidden, channels, 1)
        self.gate_time = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, f, t = x.shape
        z_freq = x.mean(dim=3, keepdim=True)  # Eq. 6: (B, C, F, T) -> (B, C, F, 1)
        z_time = x.mean(dim=2, keepdim=True).transpose(2, 3)  # Eq. 7: (B, C, 1, T) -> (B, C, T, 1)
        strip = torch.cat([z_freq, z_time], dim=2)  # (B, C, F + T, 1)
        y = self.act(self.norm(self.pointwise(self.depthwise(strip))))  # Eq. 8: (B, hidden, F + T, 1)
        y_freq, y_time = torch.split(y, [f, t], dim=2)  # (B, hidden, F, 1), (B, hidden, T, 1)
        g_freq = torch.sigmoid(self.gate_freq(y_freq))  # Eq. 9: (B, C, F, 1)
        g_time = torch.sigmoid(self.gate_time(y_time)).transpose(2, 3)  # Eq. 10: (B, C, T, 1) -> (B, C, 1, T)
        return x * g_freq * g_time  # Eq. 11, both gates broadcast: (B, C, F, T)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle (Zhang et al., 2018): with n = C / groups, input channel g * n + i becomes
    output channel i * groups + g, so that every run of `groups` consecutive channels takes one from each group.
    (B, C, H, W) -> (B, C, H, W)."""
    b, c, h, w = x.shape
    assert c % groups == 0, f"channel shuffle needs {groups} groups to divide the {c} channels"
    x = x.reshape(b, groups, c // groups, h, w)  # (B, C, H, W) -> (B, groups, n, H, W)
    return x.transpose(1, 2).reshape(b, c, h, w)  # -> (B, n, groups, H, W) -> (B, C, H, W)


class ShuffleAttention(nn.Module):
    """SA (Zhang & Yang, 2021; Li et al., 2026, 2.2.2). (B, C, H, W) -> (B, C, H, W).

    C is cut into `groups` groups and each group into halves: the first half is gated per channel from its
    global average (Eq. 12-13), the second per position from its group-normalised values (Eq. 14); the groups
    are put back together and the channels shuffled so that the next layer's groups mix them.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        assert channels % (2 * groups) == 0, f"2 * groups = {2 * groups} must divide the {channels} channels"
        self.groups = groups
        half = channels // (2 * groups)
        # One affine per channel of a half-group, shared by every group (W1, b1, W2, b2 of Eq. 13-14, each
        # C/2G x 1 x 1). Zhang & Yang start the weights at 0 and the biases at 1: every gate starts at sigmoid(1).
        self.channel_weight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.channel_bias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.spatial_weight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.spatial_bias = nn.Parameter(torch.ones(1, half, 1, 1))
        # One channel per norm group, as Zhang & Yang; no affine of its own, W2 and b2 of Eq. 14 are that affine.
        self.norm = nn.GroupNorm(half, half, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, c // self.groups, h, w)  # (B, C, H, W) -> (B * G, C / G, H, W)
        x_channel, x_spatial = x.chunk(2, dim=1)  # each (B * G, C / 2G, H, W)
        s = x_channel.mean(dim=(2, 3), keepdim=True)  # Eq. 12: (B * G, C / 2G, 1, 1)
        x_channel = x_channel * torch.sigmoid(self.channel_weight * s + self.channel_bias)  # Eq. 13
        x_spatial = x_spatial * torch.sigmoid(self.spatial_weight * self.norm(x_spatial) + self.spatial_bias)  # 14
        out = torch.cat([x_channel, x_spatial], dim=1)  # (B * G, C / G, H, W)
        out = out.reshape(b, c, h, w)  # (B * G, C / G, H, W) -> (B, C, H, W), group-major as it came in
        # Li et al. do not say how many shuffle groups; Zhang & Yang's released SA-Net shuffles with 2, which
        # interleaves the first half of the groups with the second half.
        return channel_shuffle(out, 2)


class Icasa(nn.Module):
    """ICASA(x) = beta * ICA(x) + (1 - beta) * SA(x) (Li et al., 2026, Eq. 5). (B, C, F, T) -> (B, C, F, T)."""

    def __init__(self, channels: int, reduction: int, groups: int) -> None:
        super().__init__()
        self.ica = ImprovedCoordinateAttention(channels, reduction)
        self.sa = ShuffleAttention(channels, groups)
        # Learnt freely (Li et al., Fig. 5), not squashed into [0, 1]; 0.5 weighs both paths equally at the start.
        self.beta = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * self.ica(x) + (1 - self.beta) * self.sa(x)


def attention_module(arch: MacnnArchitecture, channels: int) -> nn.Module:
    """The attention module `arch.attention` names, for a block of `channels` channels."""
    match arch.attention:
        case "icasa":
            return Icasa(channels, arch.ica_reduction, arch.sa_groups)
        case "ica":
            return ImprovedCoordinateAttention(channels, arch.ica_reduction)
        case "sa":
            return ShuffleAttention(channels, arch.sa_groups)
    raise AssertionError(f"no attention module for {arch.attention!r}")


class HeadFusionAttention(nn.Module):
    """MACNN's multi-head attention (Xu et al., 2021) with Li et al.'s (2026, 3.2) fusion of the heads.
    (B, C, F, T) -> (B, C, F, T).

    Each head h has its own 1x1 query, key and value convs of `head_width` channels and, at every position,
    attends over its channels: A_h = softmax_channels(Q_h * K_h) * V_h (elementwise, as in MACNN). Li et al.
    fuse the heads "by linear transformation and weighted averaging, residual connections, and layer
    normalization" without more detail; here the heads are averaged with learnt softmax weights (equal at the
    start), a 1x1 conv maps the average back to C channels, that is added to the input and layer-normalised
    over channels at each position. A linear map per head before averaging would be one linear map of the
    concatenated heads, which the learnt weights could not tell apart from the map itself; one shared map
    keeps the head weights meaningful.
    """

    def __init__(self, channels: int, heads: int, head_width: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_width = head_width
        self.query = nn.Conv2d(channels, heads * head_width, 1)  # every head's 1x1 query conv at once
        self.key = nn.Conv2d(channels, heads * head_width, 1)
        self.value = nn.Conv2d(channels, heads * head_width, 1)
        self.head_logits = nn.Parameter(torch.zeros(heads))
        self.project = nn.Conv2d(head_width, channels, 1)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, t = x.shape
        per_head = (b, self.heads, self.head_width, f, t)
        q = self.query(x).reshape(per_head)  # (B, H * D, F, T) -> (B, H, D, F, T)
        k = self.key(x).reshape(per_head)  # (B, H * D, F, T) -> (B, H, D, F, T)
        v = self.value(x).reshape(per_head)  # (B, H * D, F, T) -> (B, H, D, F, T)
        heads = torch.softmax(q * k, dim=2) * v  # softmax over each head's D channels: (B, H, D, F, T)
        weights = torch.softmax(self.head_logits, dim=0)  # (H,)
        fused = torch.einsum("h,bhdft->bdft", weights, heads)  # weighted average of the heads: (B, D, F, T)
        out = x + self.project(fused)  # (B, C, F, T)
        # LayerNorm normalises the last axis: channels last and back, (B, C, F, T) -> (B, F, T, C) -> (B, C, F, T)
        return self.norm(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_bn_relu(c_in: int, c_out: int, kernel_size: tuple[int, int], padding: tuple[int, int]) -> nn.Sequential:
    """Li et al.'s conv layer: conv (stride 1) -> batch norm -> ReLU. No conv bias: the norm's shift cancels it."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


def pooled_sides(f: int, t: int) -> tuple[int, int]:
    """(F', T') of the last conv's map for an (F, T) input: one off each axis, then two floor-halvings."""
    return (f - 1) // 4, (t - 1) // 4


class Macnn(nn.Module):
    """(B, T, D) frames with lengths (B,) -> (B, n_classes) logits (Li et al., 2026, Table 1 and Fig. 1)."""

    def __init__(self, arch: MacnnArchitecture, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.width = frame_width(input_shape)
        t, f = input_shape
        assert min(pooled_sides(f, t)) >= 1, (
            f"MACNN needs at least 5 features and 5 frames (its first convs take one off each axis, its two "
            f"2x2 max pools quarter them), got (T, D) = ({t}, {f})"
        )
        assert n_classes >= 1, f"n_classes must be positive, got {n_classes}"
        first = arch.channels[0] // 2
        # Li et al. give no padding; Xu et al.'s (2021) MACNN pads (4, 0) and (0, 3), which makes both convs
        # map (F, T) to (F - 1, T - 1), so that their outputs concatenate along channels.
        # 10 rows x 2 frames and 2 rows x 8 frames, each (B, 1, F, T) -> (B, C0 / 2, F - 1, T - 1)
        self.conv1a = conv_bn_relu(1, first, (10, 2), (4, 0))
        self.conv1b = conv_bn_relu(1, first, (2, 8), (0, 3))
        blocks = []
        for number, (c_in, c_out) in enumerate(pairwise(arch.channels), start=2):
            layers = [conv_bn_relu(c_in, c_out, (3, 3), (1, 1))]
            if number in POOLED_CONVS:
                layers.append(nn.MaxPool2d(2))
            # Li et al. put "a series of convolutional layers and ICASA modules" before the attention layer
            # (Fig. 1) without listing where; each module here sees its block's output, after the pool.
            if arch.attention != "none" and number in arch.attention_after:
                layers.append(attention_module(arch, c_out))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.fusion = HeadFusionAttention(arch.channels[-1], arch.heads, arch.head_width)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(arch.channels[-1], n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = check_frames(x, lengths, self.width)  # (B, T)
        assert pooled_sides(self.width, x.shape[1])[1] >= 1, f"MACNN needs at least 5 frames, got {x.shape[1]}"
        # A CNN has no mask: padding reads as zero, the training mean after scaling, as a padded segment does.
        x = torch.where(valid[..., None], x, 0).transpose(1, 2).unsqueeze(1)  # (B, T, D) -> (B, 1, D, T)
        h = torch.cat([self.conv1a(x), self.conv1b(x)], dim=1)  # (B, C0, F - 1, T - 1)
        h = self.blocks(h)  # (B, C, F', T') with (F', T') = pooled_sides(F, T)
        h = self.fusion(h)  # (B, C, F', T')
        return self.classifier(self.dropout(h.mean(dim=(2, 3))))  # (B, C, F', T') -> (B, C) -> (B, n_classes)


def build(arch: MacnnArchitecture, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return Macnn(arch, input_shape, n_classes)
