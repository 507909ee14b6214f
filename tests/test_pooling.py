"""Pooling reads only real positions: exact on synthetic states, for every kind and padding side."""

from __future__ import annotations

import pytest
import torch

from emovox.errors import ConfigError
from emovox.models.pooling import AttentionPooling, WeightedLayerSum, pool


def padded_batch(lengths: list[int], *, hidden: int = 5, left: bool = False, layers: int | None = None, seed: int = 0):
    """Random per-item states, padded with garbage (large values) on the right or left."""
    g = torch.Generator().manual_seed(seed)
    lead = () if layers is None else (layers,)
    items = [torch.randn(*lead, n, hidden, generator=g) for n in lengths]
    longest = max(lengths)
    batch = torch.full((*lead, len(lengths), longest, hidden), 1e4)
    mask = torch.zeros(len(lengths), longest, dtype=torch.bool)
    for i, (x, n) in enumerate(zip(items, lengths, strict=True)):
        sl = slice(longest - n, longest) if left else slice(0, n)
        batch[..., i, sl, :] = x
        mask[i, sl] = True
    return items, batch, mask


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("kind", ["mean", "last", "eos"])
def test_padded_batch_pools_like_items_one_by_one(kind, left):
    items, batch, mask = padded_batch([3, 7, 1, 5], left=left)
    pooled = pool(batch, mask, kind)
    for i, x in enumerate(items):
        alone = pool(x.unsqueeze(0), torch.ones(1, x.shape[0], dtype=torch.bool), kind)[0]
        torch.testing.assert_close(pooled[i], alone, rtol=0, atol=1e-6)
        expected = x.mean(dim=0) if kind == "mean" else x[-1]
        torch.testing.assert_close(pooled[i], expected, rtol=0, atol=1e-6)


def test_pool_keeps_leading_layer_dimension():
    items, batch, mask = padded_batch([4, 2], layers=3)
    pooled = pool(batch, mask, "mean")
    assert pooled.shape == (3, 2, 5)
    for i, x in enumerate(items):
        torch.testing.assert_close(pooled[:, i], x.mean(dim=1), rtol=0, atol=1e-6)
    last = pool(batch, mask, "last")
    for i, x in enumerate(items):
        torch.testing.assert_close(last[:, i], x[:, -1], rtol=0, atol=0)


def test_eos_pooling_takes_the_last_eos_token_not_the_last_token():
    hidden = torch.arange(2 * 6 * 1, dtype=torch.float32).view(2, 6, 1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    eos = torch.tensor([[0, 0, 1, 0, 0, 1], [0, 1, 0, 1, 0, 0]], dtype=torch.bool)  # padded eos ignored
    out = pool(hidden, mask, "eos", eos_mask=eos)
    assert out[:, 0].tolist() == [2.0, 9.0]
    # a row without any EOS falls back to its last real token
    out = pool(hidden, mask, "eos", eos_mask=torch.zeros_like(eos))
    assert out[:, 0].tolist() == [4.0, 11.0]


def test_nan_in_padding_never_leaks_into_the_pooled_vector():
    items, batch, mask = padded_batch([2, 4])
    batch[0, 2:] = float("nan")
    assert torch.isfinite(pool(batch, mask, "mean")).all()
    assert torch.isfinite(AttentionPooling(5)(batch, mask)).all()


def test_empty_row_pools_to_zeros_and_bad_kind_or_shape_is_refused():
    hidden = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    for kind in ("mean", "last", "eos"):
        assert torch.equal(pool(hidden, mask, kind)[1], torch.zeros(4))
    with pytest.raises(ConfigError, match="median"):
        pool(hidden, mask, "median")
    with pytest.raises(ValueError, match="mask"):
        pool(hidden, mask[:, :2], "mean")


def test_attention_pooling_starts_as_mean_and_ignores_padding_exactly():
    items, batch, mask = padded_batch([3, 6, 2], hidden=4)
    attn = AttentionPooling(4)
    torch.testing.assert_close(attn(batch, mask), pool(batch, mask, "mean"), rtol=0, atol=1e-6)
    torch.nn.init.normal_(attn.score.weight, generator=torch.Generator().manual_seed(1))
    pooled = attn(batch, mask)
    weights = attn.weights(batch, mask)
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3))
    for i, x in enumerate(items):
        alone = attn(x.unsqueeze(0), torch.ones(1, x.shape[0], dtype=torch.bool))[0]
        torch.testing.assert_close(pooled[i], alone, rtol=0, atol=1e-6)
        scores = torch.softmax(x @ attn.score.weight[0] + attn.score.bias, dim=0)
        torch.testing.assert_close(pooled[i], (scores[:, None] * x).sum(0), rtol=0, atol=1e-6)
    # changing padded values changes nothing
    noisy = batch.clone()
    noisy[~mask] = -123.0
    torch.testing.assert_close(attn(noisy, mask), pooled, rtol=0, atol=0)


def marked_frames(n: int, seed: int, longest: int = 6, hidden: int = 4):
    """Sequences of 2-``longest`` frames, one of them marked (feature 0 is 1 there, 0 elsewhere); the
    target is the marked frame's feature 1, the others' feature 1 is noise; padding is garbage."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, longest + 1, (n,), generator=g)
    mask = torch.arange(longest) < lengths[:, None]
    x = torch.randn(n, longest, hidden, generator=g)
    x[..., 0] = 0.0
    marked = (torch.rand(n, generator=g) * lengths).long()
    rows = torch.arange(n)
    x[rows, marked, 0] = 1.0
    x[~mask] = 1e4
    return x, mask, marked, x[rows, marked, 1]


def test_attention_pooling_learns_which_frame_to_read():
    """Training the score layer alone (a fixed read-out of feature 1) moves the pooling from the mean it
    starts as to the marked frame: the read-out then predicts the target, which mean pooling cannot."""
    attn = AttentionPooling(4)
    x, mask, marked, target = marked_frames(64, seed=0)
    held_x, held_mask, held_marked, held_target = marked_frames(64, seed=1)
    rows = torch.arange(64)

    def held_out() -> tuple[float, float]:
        with torch.no_grad():
            error = float(((attn(held_x, held_mask)[:, 1] - held_target) ** 2).mean())
            weight = float(attn.weights(held_x, held_mask)[rows, held_marked].mean())
        return error, weight

    error0, weight0 = held_out()
    assert weight0 < 0.45 and error0 > 0.3  # the mean: about 1/length on the marked frame, the target mostly lost
    optimizer = torch.optim.Adam(attn.parameters(), lr=0.1)
    for _ in range(150):
        loss = ((attn(x, mask)[:, 1] - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    error, weight = held_out()
    # on utterances it was not trained on: nearly all the weight on the marked frame, the target read off it
    assert weight > 0.9 and error < 0.1 * error0, (weight0, weight, error0, error)


def test_weighted_layer_sum_is_softmax_weighted_over_layers():
    states = torch.randn(4, 2, 3, 5)
    wls = WeightedLayerSum(4)
    torch.testing.assert_close(wls(states), states.mean(dim=0))
    with torch.no_grad():
        wls.weights.copy_(torch.tensor([0.0, 1.0, 2.0, -1.0]))
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0, -1.0]), dim=0)
    torch.testing.assert_close(wls(states), torch.einsum("l,lbth->bth", w, states))
    torch.testing.assert_close(wls.layer_weights().sum(), torch.tensor(1.0))
    # pooled vectors [L, B, H] work too, and mean pooling commutes with the layer sum
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(wls(pool(states, mask, "mean")), pool(wls(states), mask, "mean"))
    wls(states).sum().backward()
    assert wls.weights.grad is not None
    with pytest.raises(ValueError, match="4 layers"):
        wls(states[:3])


def test_weighted_layer_sum_normalize_layer_norms_each_layer():
    states = torch.randn(2, 3, 6) * torch.tensor([1.0, 100.0]).view(2, 1, 1)
    wls = WeightedLayerSum(2, normalize=True)
    normed = torch.nn.functional.layer_norm(states, (6,))
    torch.testing.assert_close(wls(states), normed.mean(dim=0))
