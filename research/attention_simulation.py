"""Simulation study of how the attention logits are scaled before the softmax.

Vaswani et al. (2017, Section 3.2.1) divide q.k_j by sqrt(d_k) so that, for query and key components
with unit variance, the logits keep unit variance and the softmax does not saturate. Bernhard
("Alternatives to the Scaled Dot Product for Attention in the Transformer Neural Network
Architecture", arXiv 2311.09406, 2023) proposes dividing by the sum of the key lengths,
sum_j ||k_j||_2, instead, and supports it with simulated N(0, 1) queries and keys.

This module reproduces that simulation (`first_component_samples`) and adds what the paper does not
measure (`attention_statistics`, `sweep`): how peaked the attention is and how large the softmax
Jacobian is as the number of keys n and the dimension d grow. The prediction being tested:
sum_j ||k_j|| ~ n * sqrt(d) while q.k_j ~ sqrt(d), so with `key_norm_sum` the logits shrink like
1/n and attention tends to uniform on long inputs.

Pure torch; everything runs in float64 on CPU and is seeded through a `torch.Generator`, so the same
seed gives bit-identical numbers.
"""

import math

import torch

# The names match `VanillaTransformerConfig.attention_scaling`, plus the unscaled baseline.
SCALINGS = ("none", "sqrt_dk", "key_norm_sum")

# d_k = d_model / h = 512 / 8 of the base model (Section 3.2.2): the fixed d of the n sweep.
DEFAULT_SWEEP_DIM = 64
# The paper's number of keys: the fixed n for the d sweep.
DEFAULT_SWEEP_NUM_KEYS = 32
DEFAULT_SWEEP_VALUES = tuple(2**i for i in range(3, 11))  # 8, 16, ..., 1024


def sample_queries_keys(num_queries, num_keys, dim, generator):
    """Independent draws of one query and `num_keys` keys, all components i.i.d. N(0, 1).

    Each query gets its own keys so that the `num_queries` samples are independent.
    Returns q of shape (m, d) and k of shape (m, n, d).
    """
    q = torch.randn(num_queries, dim, generator=generator, dtype=torch.float64)
    k = torch.randn(num_queries, num_keys, dim, generator=generator, dtype=torch.float64)
    return q, k


def scale_factor(k, scaling):
    """The divisor applied to q.k_j, shape (m, 1) so it broadcasts over the n keys."""
    m, _, d = k.shape  # (m, n, d)
    if scaling == "none":
        return torch.ones(m, 1, dtype=k.dtype)
    if scaling == "sqrt_dk":
        return torch.full((m, 1), math.sqrt(d), dtype=k.dtype)
    if scaling == "key_norm_sum":
        # Bernhard's proposal: one divisor per query, shared by all of its keys.
        return k.norm(dim=-1).sum(dim=-1, keepdim=True)
    raise ValueError(f"scaling={scaling!r} is not one of {SCALINGS}")


def attention_logits(q, k, scaling):
    """Scaled logits q.k_j / c for q (m, d) and k (m, n, d); returns (m, n)."""
    dots = torch.einsum("md,mnd->mn", q, k)
    return dots / scale_factor(k, scaling)


def softmax_jacobian_norms(p):
    """Frobenius and spectral norms of the softmax Jacobian J = diag(p) - p p^T, per row of p.

    Both are computed without building the (n, n) matrix. Frobenius, from expanding the squares:
    ||J||_F^2 = sum p_i^2 - 2 sum p_i^3 + (sum p_i^2)^2.
    Spectral: J is positive semi-definite (it is the covariance of a one-hot categorical), so its
    norm is its largest eigenvalue. Subtracting the rank-one p p^T from diag(p) interlaces the
    eigenvalues, so lambda_max lies in [p_(2), p_(1)], where it is the only root of the decreasing
    secular function f(lam) = 1 - sum_i p_i^2 / (p_i - lam); we find it by bisection.
    For uniform p: ||J||_F = sqrt(1/n - 1/n^2) and ||J||_2 = 1/n. For one-hot p both are 0.
    """
    s2 = (p**2).sum(-1)
    fro = (s2 - 2 * (p**3).sum(-1) + s2**2).clamp_min(0).sqrt()

    top2 = p.topk(2, dim=-1).values
    lo, hi = top2[:, 1].clone(), top2[:, 0].clone()
    for _ in range(60):  # float64: 60 halvings shrink the bracket below machine precision
        mid = (lo + hi) / 2
        f = 1 - (p**2 / (p - mid[:, None])).sum(-1)
        below = f > 0  # f decreases in lam, so f > 0 means the root is above mid
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    spectral = (lo + hi) / 2
    # A tie p_(1) = p_(2) empties the bracket; then lambda_max = p_(1) exactly (f has a pole there).
    spectral = torch.where(top2[:, 0] - top2[:, 1] < 1e-15, top2[:, 0], spectral)
    return fro, spectral


def attention_statistics(q, k, scaling):
    """Per-query statistics of softmax(q.k_j / c) for q (m, d), k (m, n, d); each value is (m,).

    - max_weight: largest attention weight (1/n is uniform, 1 is saturated).
    - entropy, entropy_ratio: Shannon entropy in nats, and divided by its maximum log n.
    - jacobian_fro, jacobian_spectral: norms of d p / d logits = diag(p) - p p^T.
    - query_grad_fro: Frobenius norm of d p / d q = J K / c, the gradient that actually reaches the
      query projection; it carries the 1/c of the scaling as well as the softmax's flatness.
    - logit_std: standard deviation of the n logits, the quantity each scaling tries to control.
    - saturated: 1.0 where max_weight > 0.99 (the softmax is nearly one-hot), else 0.0; its mean is
      the fraction of saturated queries, the failure the paper's proposal is meant to avoid.
    """
    n = k.shape[1]
    c = scale_factor(k, scaling)  # (m, 1)
    logits = torch.einsum("md,mnd->mn", q, k) / c  # (m, n)
    logp = logits.log_softmax(dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1)
    fro, spectral = softmax_jacobian_norms(p)
    # J K = diag(p) K - p (p^T K), computed row-wise: p_i (k_i - sum_j p_j k_j).
    k_mean = torch.einsum("mn,mnd->md", p, k)  # (m, d)
    jk = p[..., None] * (k - k_mean[:, None, :])  # (m, n, d)
    query_grad = jk.flatten(1).norm(dim=-1) / c[:, 0]
    return {
        "max_weight": p.max(dim=-1).values,
        "entropy": entropy,
        "entropy_ratio": entropy / math.log(n),
        "jacobian_fro": fro,
        "jacobian_spectral": spectral,
        "query_grad_fro": query_grad,
        "logit_std": logits.std(dim=-1),
        "saturated": (p.max(dim=-1).values > 0.99).double(),
    }


def first_component_samples(dims=(16, 256), num_keys=32, num_queries=500, seed=0):
    """The paper's experiment: the first softmax output p_1 for each of `num_queries` queries.

    Returns {scaling: {d: tensor (num_queries,)}}. The same draws are used for every scaling, so the
    three distributions differ only by the divisor.
    """
    generator = torch.Generator().manual_seed(seed)
    samples = {scaling: {} for scaling in SCALINGS}
    for d in dims:
        q, k = sample_queries_keys(num_queries, num_keys, d, generator)
        for scaling in SCALINGS:
            samples[scaling][d] = attention_logits(q, k, scaling).softmax(dim=-1)[:, 0]
    return samples


def summarize_first_component(samples, num_keys=32, tol=1e-3):
    """Summary numbers for `first_component_samples`' output: {scaling: {d: {...}}}.

    `saturated` is the fraction of queries whose p_1 is within `tol` of 0 or 1, where the softmax
    gradient with respect to the first logit, p_1 (1 - p_1), is below `tol`. `std_times_n` is the
    spread of p_1 in units of the uniform weight 1/n.
    """
    return {
        scaling: {
            str(d): {
                "mean": s.mean().item(),
                "std_times_n": (s.std() * num_keys).item(),
                "saturated": ((s < tol) | (s > 1 - tol)).double().mean().item(),
            }
            for d, s in per_dim.items()
        }
        for scaling, per_dim in samples.items()
    }


def sweep(over, values=DEFAULT_SWEEP_VALUES, fixed=None, num_queries=500, seed=0):
    """Mean attention statistics as the number of keys (`over="num_keys"`) or the dimension
    (`over="dim"`) takes each of `values`, the other held at `fixed`.

    Returns {scaling: {statistic: [mean over queries, one per value]}}. Each value gets its own
    draws, shared by the three scalings.
    """
    if over not in ("num_keys", "dim"):
        raise ValueError(f"over={over!r} is not one of ('num_keys', 'dim')")
    if fixed is None:
        fixed = DEFAULT_SWEEP_DIM if over == "num_keys" else DEFAULT_SWEEP_NUM_KEYS
    generator = torch.Generator().manual_seed(seed)
    result = {scaling: {} for scaling in SCALINGS}
    for value in values:
        n, d = (value, fixed) if over == "num_keys" else (fixed, value)
        q, k = sample_queries_keys(num_queries, n, d, generator)
        for scaling in SCALINGS:
            for name, per_query in attention_statistics(q, k, scaling).items():
                result[scaling].setdefault(name, []).append(per_query.mean().item())
    return result


def run_simulation(
    seed=0,
    num_queries=500,
    paper_dims=(16, 256),
    paper_num_keys=32,
    sweep_values=DEFAULT_SWEEP_VALUES,
    sweep_dim=DEFAULT_SWEEP_DIM,
    sweep_num_keys=DEFAULT_SWEEP_NUM_KEYS,
):
    """The whole simulation as one JSON-serialisable dict (plain lists and floats)."""
    samples = first_component_samples(paper_dims, paper_num_keys, num_queries, seed)
    return {
        "settings": {
            "seed": seed,
            "num_queries": num_queries,
            "paper_dims": list(paper_dims),
            "paper_num_keys": paper_num_keys,
            "sweep_values": list(sweep_values),
            "sweep_dim": sweep_dim,
            "sweep_num_keys": sweep_num_keys,
            "jacobian_norms": "Frobenius and spectral norms of diag(p) - p p^T",
        },
        "first_component_summary": summarize_first_component(samples, paper_num_keys),
        "first_component": {
            scaling: {str(d): s.tolist() for d, s in per_dim.items()}
            for scaling, per_dim in samples.items()
        },
        "vs_num_keys": sweep("num_keys", sweep_values, sweep_dim, num_queries, seed + 1),
        "vs_dim": sweep("dim", sweep_values, sweep_num_keys, num_queries, seed + 2),
    }
