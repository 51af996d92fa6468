"""The attention-scaling simulation, checked against independent numpy code and analytic facts."""

import math

import numpy as np
import pytest
import torch

from vanilla_transformer.attention_study import (
    SCALINGS,
    attention_statistics,
    first_component_samples,
    run_simulation,
    softmax_jacobian_norms,
    sweep,
)

NUM_KEYS = (8, 64, 512)


def numpy_reference(q, k, scaling):
    """Plain numpy `attention_statistics` for one query q (d,) and keys k (n, d), building the
    (n, n) Jacobian explicitly."""
    n, d = k.shape
    c = {"none": 1.0, "sqrt_dk": math.sqrt(d), "key_norm_sum": np.linalg.norm(k, axis=1).sum()}
    logits = k @ q / c[scaling]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    jacobian = np.diag(p) - np.outer(p, p)
    return {
        "max_weight": p.max(),
        "entropy": -(p * np.log(p)).sum(),
        "entropy_ratio": -(p * np.log(p)).sum() / np.log(n),
        "jacobian_fro": np.linalg.norm(jacobian, "fro"),
        "jacobian_spectral": np.linalg.eigvalsh(jacobian).max(),
        "query_grad_fro": np.linalg.norm(jacobian @ k / c[scaling], "fro"),
        "logit_std": logits.std(ddof=1),
    }


@pytest.fixture(scope="module")
def n_sweep():
    return sweep("num_keys", values=NUM_KEYS, fixed=64, num_queries=200, seed=0)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_statistics_match_numpy_reference(scaling):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((5, 16))
    k = rng.standard_normal((5, 12, 16)) * 0.5  # smaller keys so "none" is not fully one-hot
    stats = attention_statistics(torch.from_numpy(q), torch.from_numpy(k), scaling)
    for i in range(5):
        expected = numpy_reference(q[i], k[i], scaling)
        for name, value in expected.items():
            assert stats[name][i].item() == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_jacobian_norms_of_uniform_and_one_hot_are_analytic():
    n = 10
    uniform = torch.full((1, n), 1 / n, dtype=torch.float64)
    fro, spectral = softmax_jacobian_norms(uniform)
    assert fro.item() == pytest.approx(math.sqrt(1 / n - 1 / n**2))
    assert spectral.item() == pytest.approx(1 / n)
    one_hot = torch.eye(n, dtype=torch.float64)[:1]
    fro, spectral = softmax_jacobian_norms(one_hot)
    assert fro.item() == pytest.approx(0, abs=1e-12)
    assert spectral.item() == pytest.approx(0, abs=1e-12)


def test_spectral_norm_matches_eigvalsh_on_random_distributions():
    p = torch.distributions.Dirichlet(torch.full((50, 20), 0.3, dtype=torch.float64)).sample()
    _, spectral = softmax_jacobian_norms(p)
    jacobians = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    torch.testing.assert_close(spectral, torch.linalg.eigvalsh(jacobians)[:, -1])


def test_raw_dot_product_at_d256_is_almost_always_saturated():
    p1 = first_component_samples(dims=(256,), seed=0)["none"][256]
    saturated = ((p1 < 1e-3) | (p1 > 1 - 1e-3)).double().mean().item()
    assert saturated > 0.9


def test_scaled_first_components_are_never_saturated():
    samples = first_component_samples(dims=(16, 256), seed=0)
    for scaling in ("sqrt_dk", "key_norm_sum"):
        for p1 in samples[scaling].values():
            assert ((p1 > 1e-4) & (p1 < 0.9)).all(), scaling


def test_key_norm_sum_first_component_is_within_a_few_percent_of_uniform():
    for p1 in first_component_samples(dims=(16, 256), num_keys=32, seed=0)["key_norm_sum"].values():
        torch.testing.assert_close(p1 * 32, torch.ones_like(p1), rtol=0, atol=0.2)


def test_key_norm_sum_max_weight_approaches_uniform_as_n_grows(n_sweep):
    n_times_max = [
        n * w for n, w in zip(NUM_KEYS, n_sweep["key_norm_sum"]["max_weight"], strict=True)
    ]
    assert n_times_max == sorted(n_times_max, reverse=True)
    assert n_times_max[-1] == pytest.approx(1, abs=0.01)
    # sqrt_dk stays clearly peaked at the same n: its max weight is several times uniform.
    assert NUM_KEYS[-1] * n_sweep["sqrt_dk"]["max_weight"][-1] > 3


def test_key_norm_sum_logits_shrink_like_one_over_n(n_sweep):
    # sum_j ||k_j|| ~ n sqrt(d) and q.k_j ~ sqrt(d), so the logits' spread is about 1/n.
    for n, std in zip(NUM_KEYS, n_sweep["key_norm_sum"]["logit_std"], strict=True):
        assert n * std == pytest.approx(1, rel=0.1)
    for std in n_sweep["sqrt_dk"]["logit_std"]:
        assert std == pytest.approx(1, rel=0.1)


def test_entropy_is_between_zero_and_log_n(n_sweep):
    for scaling in SCALINGS:
        stats = n_sweep[scaling]
        for n, h, ratio in zip(NUM_KEYS, stats["entropy"], stats["entropy_ratio"], strict=True):
            assert 0 <= h <= math.log(n) + 1e-12
            assert ratio == pytest.approx(h / math.log(n))


def test_simulation_is_deterministic_for_a_seed():
    kwargs = {"num_queries": 20, "paper_dims": (16,), "sweep_values": (8, 16)}
    assert run_simulation(seed=3, **kwargs) == run_simulation(seed=3, **kwargs)
    assert run_simulation(seed=3, **kwargs) != run_simulation(seed=4, **kwargs)
