"""The segment protocol (Li et al., 2026): where windows lie, that training windows come from training rows
only, and that a segmented model scores each utterance by the mean of its windows' probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nas.data.folds import speaker_folds
from nas.data.segments import window_index
from nas.data.types import Utterance
from nas.dataset import PreparedData
from nas.features.spec import Segments
from nas.models import SerModel
from nas.train import predict_proba

D = 3


def starts(lengths: list[int], t: int, frames: int, stride: int) -> list[list[int]]:
    index = window_index(np.array(lengths), t, frames, stride)
    return [index.positions[index.rows == row, 0].tolist() for row in range(len(lengths))]


def test_windows_step_by_the_stride_and_the_last_ends_at_the_last_frame() -> None:
    # 4 s at a 10 ms hop, 2 s windows: every 0.4 s (Li et al.'s test stride) lands on the end exactly
    assert starts([400], 400, 200, 40) == [[0, 40, 80, 120, 160, 200]]
    # every 1 s (their training stride) over 3.7 s: 0, 1 s, then one window ending at 3.7 s
    assert starts([370], 400, 200, 100) == [[0, 100, 170]]
    assert starts([200, 201, 150, 1], 400, 200, 100) == [[0], [0, 1], [0], [0]]


def test_windows_read_their_own_frames_and_pad_short_sequences() -> None:
    index = window_index(np.array([5, 2]), 6, 4, 2)
    assert index.rows.tolist() == [0, 0, 1]
    assert index.positions.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [0, 1, 2, 3]]
    assert index.lengths.tolist() == [4, 4, 2]
    assert index.valid.tolist() == [[True] * 4, [True] * 4, [True, True, False, False]]


def _tagged_data(lengths: list[int], t: int) -> PreparedData:
    """Utterance i of speaker 'S{i % 4}' holds i + 1 in every real frame and 0 in its padding."""
    utterances = [
        Utterance(Path(f"/tagged/{i}.wav"), ("angry", "sad")[i % 2], f"S{i % 4}", ("male", "female")[i % 2])
        for i in range(len(lengths))
    ]
    x = np.zeros((len(lengths), t, D), np.float32)
    for i, length in enumerate(lengths):
        x[i, :length] = i + 1
    y = np.array([i % 2 for i in range(len(lengths))], np.int64)
    return PreparedData(utterances, x, y, ("angry", "sad"), lengths=np.array(lengths, np.int64))


def test_training_windows_come_from_training_speakers_only() -> None:
    rng = np.random.default_rng(0)
    data = _tagged_data(rng.integers(50, 400, size=16).tolist(), 400)
    fold = speaker_folds(data.utterances, 2, seed=0)[0]
    train = fold.train_indices(data.utterances)
    windows = data.training_rows(train, Segments(frames=200, train_stride=100, test_stride=40))
    tags = {int(v) for v in np.unique(windows.x)} - {0}
    assert tags == {i + 1 for i in train}  # every training utterance gives windows, no test one does
    assert not {data.utterances[tag - 1].speaker for tag in tags} & set(fold.test_speakers)
    assert windows.x.shape[1:] == (200, D) and len(windows) >= len(train)
    # a window is labelled with its own utterance's label, and its padding is zero
    for window, label, length in zip(windows.x, windows.y, windows.lengths, strict=True):
        tag = int(window[0, 0])
        assert label == data.y[tag - 1] and (window[:length] == tag).all() and (window[length:] == 0).all()


class _MeanFrame(nn.Module):
    """Logits from the mean of a window's real frames: windows of one utterance disagree when its frames do."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, 4)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.linear(x.sum(dim=1) / lengths[:, None])


def test_a_segmented_model_scores_each_utterance_by_the_mean_of_its_window_probabilities() -> None:
    torch.manual_seed(0)
    segments = Segments(frames=4, train_stride=2, test_stride=2)
    body = _MeanFrame()
    model = SerModel(body, n_features=D, frames=True, segments=segments).eval()
    lengths = np.array([9, 4, 2])
    x = np.random.default_rng(0).normal(size=(3, 10, D)).astype(np.float32)
    probabilities = predict_proba(model, x, lengths)
    assert probabilities.shape == (3, 4)  # one row per utterance, however many windows each has
    for row, length in enumerate(lengths):
        windows = [x[row, s : min(s + 4, length)] for s in ((0, 2, 4, 5) if length == 9 else (0,))]
        with torch.no_grad():
            window_probabilities = [
                torch.softmax(body(torch.from_numpy(w)[None], torch.tensor([len(w)])), -1)[0].numpy() for w in windows
            ]
        expected = np.mean(window_probabilities, axis=0)
        np.testing.assert_allclose(probabilities[row], expected, rtol=1e-5, atol=1e-6)


def test_training_on_windows_is_the_cross_entropy_of_the_network_itself() -> None:
    torch.manual_seed(0)
    body = _MeanFrame()
    model = SerModel(body, n_features=D, frames=True, segments=Segments(frames=4, train_stride=2, test_stride=2))
    x, lengths = torch.randn(5, 4, D), torch.tensor([4, 4, 3, 2, 4])
    out = model(x, lengths)
    masked = torch.where(torch.arange(4)[None, :, None] < lengths[:, None, None], x, 0)
    assert torch.allclose(out, torch.log_softmax(body(masked, lengths), dim=-1), atol=1e-6)


def test_segments_are_for_frame_sequences() -> None:
    from pydantic import ValidationError

    from nas.features.spec import FeatureSpec

    with pytest.raises(ValidationError, match="segments apply to the frames layout only"):
        FeatureSpec(segments=Segments())
