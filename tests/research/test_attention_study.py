"""The attention-scaling simulation, checked against independent numpy code and analytic facts."""

import math

import numpy as np
import pytest
import torch

from research.attention_simulation import (
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


# --------------------------------------------------------------------------------------------------
# Training half (research.attention_study)
# --------------------------------------------------------------------------------------------------


def test_attention_entropy_matches_a_direct_computation_with_padding():
    from research.attention_study import attention_entropy

    torch.manual_seed(0)
    B, h, T, S = 3, 2, 5, 6
    key_mask = torch.ones(B, T, S, dtype=torch.bool)
    key_mask[0, :, 4:] = False  # padded keys of sentence 0
    key_mask[2] &= torch.ones(T, S, dtype=torch.bool).tril()  # causal for sentence 2
    query_mask = torch.ones(B, T, dtype=torch.bool)
    query_mask[1, 3:] = False  # padded queries of sentence 1
    logits = torch.randn(B, h, T, S).masked_fill(~key_mask[:, None], float("-inf"))
    weights = logits.softmax(-1)
    stats = attention_entropy(weights, query_mask, key_mask)

    entropies, ratios, uniform, max_weights = [], [], [], []
    for b in range(B):
        for head in range(h):
            for t in range(T):
                if not query_mask[b, t]:
                    continue
                p = weights[b, head, t][key_mask[b, t]].double()
                entropy = -(p * p.log()).sum().item()
                entropies.append(entropy)
                uniform.append(math.log(len(p)))
                max_weights.append(p.max().item())
                if len(p) > 1:
                    ratios.append(entropy / math.log(len(p)))
    assert stats["entropy"] == pytest.approx(np.mean(entropies), rel=1e-5)
    assert stats["entropy_ratio"] == pytest.approx(np.mean(ratios), rel=1e-5)
    assert stats["uniform_entropy"] == pytest.approx(np.mean(uniform), rel=1e-5)
    assert stats["max_weight"] == pytest.approx(np.mean(max_weights), rel=1e-5)


def test_per_layer_grad_norms_match_direct_norms_on_a_tiny_model():
    from conftest import tiny_config

    from research.attention_study import per_layer_grad_norms
    from vanilla_transformer import VanillaTransformerForConditionalGeneration

    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(tiny_config())
    ids = torch.randint(4, model.config.vocab_size, (3, 7))
    model(input_ids=ids, labels=ids).loss.backward()
    norms = per_layer_grad_norms(model)

    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    total = math.sqrt(sum(g.pow(2).sum().item() for g in grads.values()))
    assert norms["total"] == pytest.approx(total, rel=1e-5)
    layer = math.sqrt(
        sum(g.pow(2).sum().item() for n, g in grads.items() if ".decoder.layers.1." in n)
    )
    assert norms["decoder.1"] == pytest.approx(layer, rel=1e-5)
    q = grads["model.decoder.layers.0.encoder_attn.q_proj.weight"].norm().item()
    assert norms["decoder.0.encoder_attn.q_proj"] == pytest.approx(q, rel=1e-5)
    expected = {f"encoder.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj")}
    assert expected <= set(norms)
    layers_and_other = ("encoder.0", "encoder.1", "decoder.0", "decoder.1", "other")
    assert math.sqrt(sum(norms[k] ** 2 for k in layers_and_other)) == pytest.approx(total)


def test_key_norm_sum_attention_is_nearly_uniform_at_initialisation():
    from conftest import tiny_config

    from research.attention_study import attention_entropy_by_layer
    from vanilla_transformer import VanillaTransformerForConditionalGeneration

    ids = torch.randint(4, 30, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    labels = ids.clone()
    labels[1, 9:] = -100
    ratios = {}
    for scaling in ("sqrt_dk", "key_norm_sum"):
        torch.manual_seed(0)
        config = tiny_config(attention_scaling=scaling)
        model = VanillaTransformerForConditionalGeneration(config)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels),
        }
        stats = attention_entropy_by_layer(model, batch)
        assert set(stats) == {"encoder_self", "decoder_self", "cross"}
        assert all(len(layers) == 2 for layers in stats.values())
        ratios[scaling] = min(la["entropy_ratio"] for ls in stats.values() for la in ls)
    assert ratios["key_norm_sum"] > 0.97  # short causal prefixes (n = 2, 3) are the least flat
    assert ratios["sqrt_dk"] < ratios["key_norm_sum"]


def _tiny_corpus(folder):
    import json

    rng = np.random.default_rng(0)
    english = "the a house dog cat is big small red blue in on".split()
    spanish = "la el casa perro gato es grande pequeño rojo azul en y".split()
    for split, n in (("train", 60), ("validation", 12)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for _ in range(n):
                idx = rng.integers(0, len(english), size=rng.integers(2, 6))
                pair = {
                    "en": " ".join(english[i] for i in idx),
                    "es": " ".join(spanish[i] for i in idx),
                }
                f.write(json.dumps({"translation": pair}) + "\n")


def test_train_command_writes_the_study_json_and_figures(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    from conftest import word_tokenizer

    pytest.importorskip("matplotlib")
    corpus, tokenizer, out = tmp_path / "corpus", tmp_path / "tok", tmp_path / "out"
    corpus.mkdir()
    _tiny_corpus(corpus)
    word_tokenizer().save_pretrained(tokenizer)
    script = Path(__file__).resolve().parents[2] / "research" / "run_attention_study.py"
    spec = importlib.util.spec_from_file_location("attention_scaling_study", script)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    study.main(
        [
            "train",
            "--out_dir",
            str(out),
            "--dataset",
            str(corpus),
            "--tokenizer",
            str(tokenizer),
            *"--settings pre_ln --seeds 0 --max_steps 3 --eval_steps 2 --eval_bleu_samples".split(),
            *"4 --d_model 16 --ffn_dim 32 --attention_heads 2 --encoder_layers 1".split(),
            *"--decoder_layers 1".split(),
            *"--batch_tokens 200".split(),
        ]
    )

    result = json.loads((out / "training.json").read_text())
    assert {"config", "settings", "hardware", "runs", "summary"} <= set(result)
    assert [(r["attention_scaling"], r["seed"]) for r in result["runs"]] == [
        ("sqrt_dk", 0),
        ("key_norm_sum", 0),
    ]
    run = result["runs"][0]
    assert run["steps"] == 3 and run["curves"]["step"] == [0, 2, 3]
    assert {"val_loss", "val_nll", "val_bleu", "val_chrf", "train_loss"} <= set(run["curves"])
    assert len(run["grad_norms"]["encoder.0.self_attn.q_proj"]) == 3
    assert {k: len(v) for k, v in run["entropy"].items()} == {
        "encoder_self": 1,
        "decoder_self": 1,
        "cross": 1,
    }
    stats = result["summary"]["pre_ln"]["key_norm_sum"]
    assert {"val_bleu", "val_loss", "early_grad_norm", "entropy_ratio"} <= set(stats)
    for name in ("training_curves.png", "grad_norms.png", "attention_entropy.png"):
        assert (out / name).stat().st_size > 0


def test_a_study_run_is_deterministic_for_a_seed(tmp_path):
    from conftest import word_tokenizer

    from research.attention_study import (
        StudyConfig,
        load_study_data,
        train_one,
    )

    _tiny_corpus(tmp_path)
    word_tokenizer().save_pretrained(tmp_path / "tok")
    config = StudyConfig(
        dataset=str(tmp_path),
        tokenizer=str(tmp_path / "tok"),
        max_steps=2,
        eval_bleu_samples=2,
        d_model=16,
        ffn_dim=32,
        attention_heads=2,
        encoder_layers=1,
        decoder_layers=1,
        batch_tokens=200,
    )
    data = load_study_data(config)
    first, second = (train_one(config, "post_ln", "key_norm_sum", 3, data) for _ in range(2))
    assert first["grad_norms"] == second["grad_norms"]
    assert first["curves"]["val_loss"] == second["curves"]["val_loss"]


def test_the_studys_options_are_the_training_options_by_the_same_names():
    """A study option that training also has is passed to it under its own name; the older
    study flags still parse, as aliases."""
    from research import run_attention_study as study
    from research.attention_study import SHARED_OPTIONS, StudyConfig

    assert {"eval_steps", "eval_bleu_samples", "max_train_minutes", "encoder_layers"} <= set(
        SHARED_OPTIONS
    )
    config = StudyConfig(d_model=16, ffn_dim=32, attention_heads=2, encoder_layers=1, eval_steps=7)
    training = config.training_config("pre_ln", seed=3)
    assert all(getattr(training, name) == getattr(config, name) for name in SHARED_OPTIONS)
    assert (training.seed, training.norm_first, training.decoder_layers) == (3, True, 2)
    args = study.parse_args(["train", "--eval_every", "5", "--bleu_samples", "9", "--layers", "3"])
    assert (args.eval_steps, args.eval_bleu_samples) == (5, 9)
    assert args.encoder_layers == args.decoder_layers == 3
