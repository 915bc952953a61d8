from __future__ import annotations

import pytest
import torch

from pipeline.pooling import POOLINGS, l2_normalize, last_token_index, pool

HIDDEN = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # (B=2, T=4, H=3)


def test_last_token_right_padding():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 3]
    assert torch.equal(pool(HIDDEN, mask, "last_token"), torch.stack([HIDDEN[0, 2], HIDDEN[1, 3]]))


def test_last_token_left_padding_where_sum_minus_one_is_wrong():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [3, 3]
    assert (mask.sum(1) - 1).tolist() == [1, 3]  # the common trick picks a pad position for row 0
    assert torch.equal(pool(HIDDEN, mask, "last_token"), torch.stack([HIDDEN[0, 3], HIDDEN[1, 3]]))


def test_mean_ignores_padding():
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    expected = torch.stack([HIDDEN[0, :2].mean(0), HIDDEN[1, 1:].mean(0)])
    assert torch.allclose(pool(HIDDEN, mask, "mean"), expected)


def test_cls_is_first_real_token_for_both_sides():
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]])
    assert torch.equal(pool(HIDDEN, mask, "cls"), torch.stack([HIDDEN[0, 0], HIDDEN[1, 2]]))


def test_unknown_pooling_names_the_choices():
    with pytest.raises(ValueError, match="last_token, mean, cls, max"):
        pool(HIDDEN, torch.ones(2, 4), "median")


ST_MODE = {"last_token": "lasttoken"}  # our name -> sentence-transformers' where they differ


@pytest.mark.parametrize("method", POOLINGS)
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("skip", [0, 2])
def test_every_mode_equals_sentence_transformers_pooling(method, side, skip):
    """The same formulas as sentence-transformers' Pooling module, for both padding sides, with and without the
    prompt left out (include_prompt false: `skip` = its prompt_length)."""
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    torch.manual_seed(0)
    lengths = torch.tensor([5, 3, 7, 4])
    hidden = torch.randn(4, 7, 6)
    mask = (torch.arange(7)[None, :] < lengths[:, None]).long()  # (B, T) right padding
    if side == "left":
        mask = mask.flip(1)
    st = Pooling(6, pooling_mode=ST_MODE.get(method, method), include_prompt=skip == 0)
    features = {"token_embeddings": hidden, "attention_mask": mask}
    if skip:
        features["prompt_length"] = skip
    expected = st(features)["sentence_embedding"]
    torch.testing.assert_close(pool(hidden, mask, method, skip), expected)


@pytest.mark.parametrize("method", POOLINGS)
def test_a_row_with_nothing_left_to_pool_is_zero_not_nan(method):
    """The degenerate row: every real token skipped (a prompt as long as the row)."""
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    got = pool(HIDDEN, mask, method, skip=2)
    assert torch.equal(got[0], torch.zeros(3)) and torch.isfinite(got).all()


def test_l2_normalize_unit_norm():
    v = l2_normalize(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
    assert torch.allclose(v, torch.tensor([[0.6, 0.8], [1.0, 0.0]]))


@pytest.mark.parametrize("method", POOLINGS)
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_states_in_padded_positions_never_reach_real_rows(method, poison):
    """0 x NaN is NaN: masking by multiplication would leak a padded position's NaN into the row's mean."""
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    poisoned = HIDDEN.clone()
    poisoned[0, 2:] = poison
    poisoned[1, 0] = poison
    got = pool(poisoned, mask, method)
    assert torch.isfinite(got).all()
    assert torch.equal(got, pool(HIDDEN, mask, method))
