"""TokenBudgetBatchSampler: budget, determinism, epochs, sharding, resume; padding stats."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vanilla_transformer.recipe.data import (
    TokenBudgetBatchSampler,
    fixed_size_batches,
    padding_stats,
)

RNG = np.random.default_rng(0)
SRC = RNG.integers(3, 80, size=500)
TGT = np.clip(SRC + RNG.integers(-5, 6, size=500), 2, None)
BUDGET = 600


def sampler(**kwargs):
    return TokenBudgetBatchSampler(SRC, TGT, kwargs.pop("max_tokens", BUDGET), **kwargs)


def padded_size(batch):
    return len(batch) * (SRC[batch].max() + TGT[batch].max())


def test_no_batch_exceeds_the_token_budget_and_every_example_is_used_once():
    batches = list(sampler(seed=3))
    assert all(padded_size(b) <= BUDGET for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(500))


def test_example_longer_than_the_budget_gets_its_own_batch_or_an_error():
    src, tgt = np.array([5, 400, 6]), np.array([5, 400, 6])
    batches = list(TokenBudgetBatchSampler(src, tgt, 100))
    assert [1] in batches
    with pytest.raises(ValueError, match="more than max_tokens=100"):
        list(TokenBudgetBatchSampler(src, tgt, 100, oversized="error"))


def test_same_seed_and_epoch_give_the_same_batches():
    a, b = sampler(seed=7), sampler(seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)


def test_batches_differ_between_epochs():
    s = sampler(seed=7)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert first != second
    assert {tuple(sorted(b)) for b in first} != {tuple(sorted(b)) for b in second}


def test_two_ranks_see_disjoint_batches_and_equal_counts():
    for drop_last in (False, True):
        r0 = list(sampler(seed=1, num_replicas=2, rank=0, drop_last=drop_last))
        r1 = list(sampler(seed=1, num_replicas=2, rank=1, drop_last=drop_last))
        assert len(r0) == len(r1)
        if drop_last:
            assert not {i for b in r0 for i in b} & {i for b in r1 for i in b}
        else:
            all_batches = sampler(seed=1).all_batches()
            # Padding repeats whole batches from the start of the list, never splits them.
            assert {tuple(b) for b in r0 + r1} == {tuple(b) for b in all_batches}


def test_len_matches_the_number_of_batches_yielded():
    s = sampler(seed=5, num_replicas=3, rank=2)
    assert len(s) == len(list(s))


def test_resume_mid_epoch_gives_the_remaining_batches():
    full = sampler(seed=11)
    full.set_epoch(4)
    expected = list(full)

    interrupted = sampler(seed=11)
    interrupted.set_epoch(4)
    iterator = iter(interrupted)
    done = [next(iterator) for _ in range(5)]
    state = interrupted.state_dict()

    resumed = sampler(seed=11)
    resumed.load_state_dict(state)
    assert len(resumed) == len(expected) - 5
    assert done + list(resumed) == expected
    assert len(resumed) == len(expected)  # the next epoch starts from its beginning


def test_works_as_a_dataloader_batch_sampler():
    data = [torch.full((int(n),), i) for i, n in enumerate(SRC)]
    s = sampler(seed=0)
    loader = DataLoader(
        data, batch_sampler=s, collate_fn=lambda items: [x[0].item() for x in items]
    )
    assert [b for b in loader] == list(s)
    assert len(loader) == len(s)


def test_bucketing_pads_less_than_fixed_size_random_batches():
    batches = list(sampler(seed=0))
    budget = padding_stats(batches, SRC, TGT)
    size = round(budget["mean_batch_size"])
    fixed = padding_stats(fixed_size_batches(500, size, seed=0), SRC, TGT)
    assert budget["padding_fraction"] < 0.1 < fixed["padding_fraction"]
    assert budget["max_batch_tokens"] <= BUDGET


def test_padding_stats_counts_source_and_target_padding():
    stats = padding_stats([[0, 1]], np.array([2, 4]), np.array([3, 3]))
    assert stats["padded_tokens"] == 2 * 4 + 2 * 3
    assert stats["real_tokens"] == 12
    assert stats["padding_fraction"] == pytest.approx(2 / 14)
