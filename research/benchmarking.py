"""Speed benchmarks of this model against transformers' `MarianMTModel` of identical shape.

Both models are built with the same dimensions (ReLU, shared vocabulary, tied embeddings, scaled
embeddings, SDPA attention), fed the same inputs, and timed alternately (A B A B ...) after a
warm-up, so that a load spike on a shared machine hits both: the medians and, above all, the ratios
(this model / Marian) are what to read. Marian's projections carry biases and it adds a
`final_logits_bias`; ours have none, so its parameter count is slightly larger (both are reported).

`scripts/benchmark.py` is the command line; the functions here are importable for tests.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import resource
import statistics
import subprocess
import time
import types
from collections.abc import Callable, Iterable

import torch
from transformers import MarianConfig, MarianMTModel

from vanilla_transformer.configuration_vanilla_transformer import VanillaTransformerConfig
from vanilla_transformer.hardware import cpu_features_line, cpu_flags, cpu_name
from vanilla_transformer.modeling_vanilla_transformer import (
    VanillaTransformerForConditionalGeneration,
    sinusoidal_table,
)

# The paper's base dimensions (Table 3) with an 8k joint vocabulary (the project's Bible BPE size),
# and a tiny shape where per-call overhead, not arithmetic, dominates.
SHAPES = {
    "base": dict(vocab_size=8000, d_model=512, layers=6, heads=8, ffn_dim=2048),
    "tiny": dict(vocab_size=1000, d_model=64, layers=2, heads=4, ffn_dim=256),
    # Table 3's big model, used on GPU only.
    "big": dict(vocab_size=8000, d_model=1024, layers=6, heads=16, ffn_dim=4096),
}
PAD = 0  # the project's padding id


# --------------------------------------------------------------------------------------------------
# The two models
# --------------------------------------------------------------------------------------------------


# Settings Marian takes from our config: ReLU, no attention/activation dropout, scaled and tied
# embeddings, the project's special token ids.
MARIAN_TAKES_OURS = tuple(
    """activation_function attention_dropout activation_dropout scale_embedding
    tie_word_embeddings pad_token_id eos_token_id decoder_start_token_id""".split()
)


def model_configs(
    shape: str | dict, dropout: float = 0.1
) -> tuple[VanillaTransformerConfig, MarianConfig]:
    """Configs of this model and of a MarianMTModel with the same dimensions."""
    s = SHAPES[shape] if isinstance(shape, str) else shape
    # The fields both configs name alike.
    shared = dict(
        vocab_size=s["vocab_size"],
        d_model=s["d_model"],
        encoder_layers=s["layers"],
        decoder_layers=s["layers"],
        encoder_attention_heads=s["heads"],
        decoder_attention_heads=s["heads"],
        encoder_ffn_dim=s["ffn_dim"],
        decoder_ffn_dim=s["ffn_dim"],
        dropout=dropout,
        max_position_embeddings=512,
    )
    ours = VanillaTransformerConfig(**shared)
    # Marian takes our values (the paper's defaults) of the settings whose defaults differ.
    marian = MarianConfig(
        **shared,
        **{name: getattr(ours, name) for name in MARIAN_TAKES_OURS},
        decoder_vocab_size=s["vocab_size"],
        share_encoder_decoder_embeddings=True,
        # Marian forces EOS at max_length by default; ours does not: keep the same logits processors.
        forced_eos_token_id=None,
    )
    return ours, marian


def build_models(
    shape: str | dict = "tiny",
    attn_implementation: str = "sdpa",
    seed: int = 0,
    dropout: float = 0.1,
) -> tuple[VanillaTransformerForConditionalGeneration, MarianMTModel]:
    """This model and a MarianMTModel of identical shape, both in train mode, on CPU, float32."""
    ours_config, marian_config = model_configs(shape, dropout)
    torch.manual_seed(seed)
    ours = VanillaTransformerForConditionalGeneration._from_config(
        ours_config, attn_implementation=attn_implementation
    )
    torch.manual_seed(seed)
    marian = MarianMTModel._from_config(marian_config, attn_implementation=attn_implementation)
    for model in (ours, marian):
        model.generation_config.forced_eos_token_id = None
        model.generation_config.bad_words_ids = None
        model.train()
    return ours, marian


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, each tied tensor counted once. Not counted: buffers (Marian's
    `final_logits_bias`, our sinusoid table) and Marian's sinusoid tables, which it stores as
    frozen parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------


def matmul_parameter_counts(config: VanillaTransformerConfig) -> dict[str, int]:
    """Weights that take part in a matrix product, per part (biases, LayerNorms and embedding
    lookups do no matmul). The tied embedding counts once, as the pre-softmax projection."""
    d = config.d_model
    encoder_layer = 4 * d * d + 2 * d * config.encoder_ffn_dim  # W^Q W^K W^V W^O, W_1 W_2
    decoder_layer = 8 * d * d + 2 * d * config.decoder_ffn_dim  # self- and cross-attention
    return {
        "encoder": encoder_layer * config.encoder_layers,
        "decoder": decoder_layer * config.decoder_layers,
        "lm_head": d * config.vocab_size,
    }


def forward_flops(config: VanillaTransformerConfig, batch: int, src_len: int, tgt_len: int) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2): 2 x weights x tokens through the part of
    the model each token crosses (source tokens the encoder, target tokens the decoder and the
    output projection), plus the attention products Q K^T and A V, 2 x 2 x d_model x T_q x T_k per
    layer, counted in full (no halving for the causal mask, as in PaLM's MFU formula).
    With src_len == tgt_len the dense part is 2 x matmul params x target tokens."""
    p = matmul_parameter_counts(config)
    dense = 2 * (p["encoder"] * src_len + (p["decoder"] + p["lm_head"]) * tgt_len)
    d = config.d_model
    attention = (
        4
        * d
        * (
            config.encoder_layers * src_len * src_len
            + config.decoder_layers * (tgt_len * tgt_len + tgt_len * src_len)
        )
    )
    return batch * (dense + attention)


def training_flops(config: VanillaTransformerConfig, batch: int, src_len: int, tgt_len: int) -> int:
    """Forward + backward = 3 x forward (the backward pass computes two products per forward one):
    the "6 x params x tokens" rule plus attention."""
    return 3 * forward_flops(config, batch, src_len, tgt_len)


# --------------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(
    runs: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Seconds per call of each run, interleaved A B C A B C ... after `warmup` rounds, so that a
    change of machine load affects every run alike."""
    device = torch.device(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(warmup + repeats):
        for name, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def matmul_peak_run(device: torch.device | str = "cpu", n: int | None = None):
    """A large square GEMM (fp32 on CPU, bf16 on GPU) and its FLOPs: the machine's own matmul peak
    when timed."""
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b)), 2 * n**3


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def random_batch(vocab_size: int, batch: int, src_len: int, tgt_len: int, device="cpu", seed=0):
    """Source ids, attention mask and labels without padding (ids above the special tokens)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab_size, (batch, src_len), generator=g)
    labels = torch.randint(4, vocab_size, (batch, tgt_len), generator=g)
    return {
        "input_ids": src.to(device),
        "attention_mask": torch.ones_like(src).to(device),
        "labels": labels.to(device),
    }


def padded_batch(pairs: list[tuple[list[int], list[int]]], device="cpu"):
    """Right-padded tensors from (source ids, target ids) pairs; padded labels are -100."""
    batch = len(pairs)
    src_len = max(len(s) for s, _ in pairs)
    tgt_len = max(len(t) for _, t in pairs)
    src = torch.full((batch, src_len), PAD, dtype=torch.long)
    mask = torch.zeros((batch, src_len), dtype=torch.long)
    labels = torch.full((batch, tgt_len), -100, dtype=torch.long)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, : len(t)] = torch.tensor(t)
    return {
        "input_ids": src.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The paper's Adam (beta2 0.98, eps 1e-9), fused where this torch supports it (same for both
    models: the optimiser is part of the harness, not of the model)."""
    try:
        return torch.optim.Adam(
            model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True
        )
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)


def training_step_fn(model, optimizer, batch: dict, autocast_dtype: torch.dtype | None = None):
    """One full update of the recipe's `training.training_step` (label-smoothed loss, backward,
    finiteness check, Adam step) on `batch`, the same for both models."""
    from accelerate import Accelerator

    from vanilla_transformer.recipe.training import TrainingConfig, training_step

    device_type = batch["input_ids"].device.type
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    config = TrainingConfig(log_with="none")

    def step():
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return training_step(model, optimizer, None, accelerator, [batch], config)

    return step


def bench_training(
    shape: str,
    batch: int,
    src_len: int,
    tgt_len: int,
    repeats: int,
    device: str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    include_peak: bool = True,
) -> dict:
    """Training tokens/s of both models, alternating, with the matmul peak timed in between."""
    ours, marian = build_models(shape)
    ours.to(device)
    marian.to(device)
    data = random_batch(ours.config.vocab_size, batch, src_len, tgt_len, device)
    runs = {
        "ours": training_step_fn(ours, make_optimizer(ours), data, autocast_dtype),
        "marian": training_step_fn(marian, make_optimizer(marian), data, autocast_dtype),
    }
    if include_peak:
        peak_fn, peak_flops = matmul_peak_run(device)
        runs["peak"] = peak_fn
    times = alternate(runs, repeats=repeats, warmup=2, device=device)
    flops = training_flops(ours.config, batch, src_len, tgt_len)
    tokens = batch * tgt_len
    result = {
        "shape": shape,
        "batch": batch,
        "src_len": src_len,
        "tgt_len": tgt_len,
        "params_ours": count_parameters(ours),
        "params_marian": count_parameters(marian),
        "train_flops_per_step": flops,
    }
    for name in ("ours", "marian"):
        t = median(times[name])
        result[f"{name}_step_s"] = t
        result[f"{name}_tokens_per_s"] = tokens / t
        result[f"{name}_tflops"] = flops / t / 1e12
    result["ratio"] = result["ours_tokens_per_s"] / result["marian_tokens_per_s"]
    if include_peak:
        peak = peak_flops / median(times["peak"])
        result["peak_tflops"] = peak / 1e12
        result["ours_fraction_of_peak"] = result["ours_tflops"] * 1e12 / peak
        result["marian_fraction_of_peak"] = result["marian_tflops"] * 1e12 / peak
    if device.startswith("cuda"):
        for name in ("ours", "marian"):
            torch.cuda.reset_peak_memory_stats()
            runs[name]()
            result[f"{name}_peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _peak_memory_child(kind: str, shape: str, batch: int, src_len: int, tgt_len: int) -> None:
    """Run in a fresh process: print the growth of the resident set's high-water mark over two
    training steps (weights and the inputs excluded: they exist before the first step)."""
    torch.set_num_threads(1)
    ours_config, marian_config = model_configs(shape)
    if kind == "ours":
        model = VanillaTransformerForConditionalGeneration._from_config(ours_config)
    else:
        model = MarianMTModel._from_config(marian_config)
    model.train()
    data = random_batch(model.config.vocab_size, batch, src_len, tgt_len)
    step = training_step_fn(model, make_optimizer(model), data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)  # ru_maxrss is in KiB on Linux


def peak_training_memory_mb(kind: str, shape: str, batch: int, src_len: int, tgt_len: int) -> float:
    """Peak extra resident memory (MiB) of training steps, from `ru_maxrss` in a fresh process
    (tracemalloc does not see torch's allocations; the high-water mark only grows, hence one
    process per model). Includes Adam's two moment buffers and the gradients."""
    code = (
        "from research.benchmarking import _peak_memory_child as f; "
        f"f({kind!r}, {shape!r}, {batch}, {src_len}, {tgt_len})"
    )
    out = subprocess.run(
        [os.sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def generate_fn(model, inputs: dict, num_beams: int, new_tokens: int):
    """generate() with a fixed output length, so that both models produce the same tokens count."""

    def run():
        with torch.inference_mode():
            return model.generate(
                **inputs,
                num_beams=num_beams,
                do_sample=False,
                min_new_tokens=new_tokens,
                max_new_tokens=new_tokens,
                early_stopping=False,
                length_penalty=1.0,
            )

    return run


def bench_decoding(
    models: dict[str, torch.nn.Module],
    vocab_size: int,
    settings: Iterable[tuple[int, int]] = ((1, 1), (1, 4), (8, 1), (8, 4)),
    src_len: int = 32,
    new_tokens: int = 32,
    repeats: int = 5,
    device: str = "cpu",
) -> list[dict]:
    """generate() throughput (output tokens/s, beams not counted) and latency per sentence for each
    (batch, num_beams) setting, the models alternating."""
    results = []
    for batch, beams in settings:
        data = random_batch(vocab_size, batch, src_len, 1, device, seed=batch)
        inputs = {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]}
        runs = {
            name: generate_fn(m.eval(), inputs, beams, new_tokens) for name, m in models.items()
        }
        times = alternate(runs, repeats=repeats, warmup=1, device=device)
        row = {"batch": batch, "num_beams": beams, "new_tokens": new_tokens, "src_len": src_len}
        for name in models:
            t = median(times[name])
            row[f"{name}_s"] = t
            row[f"{name}_tokens_per_s"] = batch * new_tokens / t
            row[f"{name}_latency_ms_per_sentence"] = 1000 * t / batch
        results.append(row)
    return results


# --------------------------------------------------------------------------------------------------
# Decoding at the reference shape: every path on the same weights
# --------------------------------------------------------------------------------------------------

# Base dimensions, 8k shared vocabulary, random weights, 24-token sources, exactly 32 new tokens;
# greedy at batch 1 and beam 4 at batch 8. ms per step = generate() time / new tokens (the encoder
# pass is included, the same for every path).
REFERENCE_SRC_LEN = 24
REFERENCE_NEW_TOKENS = 32
REFERENCE_SETTINGS = (("greedy, batch 1", 1, 1), ("beam 4, batch 8", 8, 4))
# Bytes per weight of each path's decoder matrices (for its bandwidth floor).
WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}


def decoder_step_products(config: VanillaTransformerConfig) -> list[tuple[int, int, int]]:
    """The matrix products of one decoding step as (out, in, calls): per decoder layer W^Q W^K W^V
    W^O of self-attention, W^Q and W^O of cross-attention (its keys and values are projected once
    per source), W_1 and W_2; plus the output projection."""
    d, ffn, layers = config.d_model, config.decoder_ffn_dim, config.decoder_layers
    return [(d, d, 6 * layers), (ffn, d, layers), (d, ffn, layers), (config.vocab_size, d, 1)]


def decoder_step_weights(config: VanillaTransformerConfig) -> int:
    """Weights a decoding step reads once whatever the batch (LayerNorms and biases: under 0.1%)."""
    return sum(out * inp * calls for out, inp, calls in decoder_step_products(config))


def int8_kernel_step_ms(
    config: VanillaTransformerConfig, rows: int, repeats: int = 5, calls: int = 200
) -> dict[str, float | None]:
    """One decoding step's matrix products (`decoder_step_products`) through each CPU int8 kernel
    torch offers, and fp32 `F.linear` beside them: per kernel, the sum over the step's products of
    the median time of one call, in ms. Each product is timed alone, repeating one weight, so the
    weights stay in cache: a lower bound on what the kernel costs inside a real step. `rows` is
    batch x beams (1: greedy batch 1; 32: beam 4, batch 8). None where the build lacks a kernel."""
    kernels: dict[str, float | None] = {
        "fp32 F.linear": 0.0,
        "int8 torch._int_mm (Int8Linear)": 0.0,
        "int8 oneDNN qlinear_pointwise, prepacked (PT2E)": 0.0,
        "int8 weight-only _weight_int8pack_mm, bf16 activations": 0.0,
    }
    generator = torch.Generator().manual_seed(0)
    for out, inp, count in decoder_step_products(config):
        weight = torch.randn(out, inp, generator=generator)
        scale = weight.abs().amax(dim=1) / 127
        qweight = torch.round(weight / scale[:, None]).to(torch.int8)
        x = torch.randn(rows, inp, generator=generator)
        x_scale = float(x.abs().amax() / 127)
        x_int8 = torch.round(x / x_scale).to(torch.int8)
        candidates = {
            "fp32 F.linear": functools.partial(torch.nn.functional.linear, x, weight),
            "int8 torch._int_mm (Int8Linear)": functools.partial(
                torch._int_mm, x_int8, qweight.t()
            ),
            "int8 weight-only _weight_int8pack_mm, bf16 activations": functools.partial(
                torch._weight_int8pack_mm, x.bfloat16(), qweight, scale.bfloat16()
            ),
        }
        try:
            packed = torch.ops.onednn.qlinear_prepack(qweight, [rows, inp])
            zero_points = torch.zeros(out, dtype=torch.int64)
            qlinear_args = (x_int8, x_scale, 0, packed, scale, zero_points, None, 1.0, 0)
            candidates["int8 oneDNN qlinear_pointwise, prepacked (PT2E)"] = functools.partial(
                torch.ops.onednn.qlinear_pointwise, *qlinear_args, torch.float32, "none", [], ""
            )
        except (AttributeError, RuntimeError):
            kernels["int8 oneDNN qlinear_pointwise, prepacked (PT2E)"] = None
        for name, fn in candidates.items():
            if kernels[name] is None:  # missing for an earlier product: no partial sums
                continue
            for _ in range(5):
                fn()
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                runs.append((time.perf_counter() - start) / calls)
            kernels[name] += median(runs) * count * 1e3
    return kernels


def bandwidth_floor_ms(config: VanillaTransformerConfig, bytes_per_weight: int, gb_per_s: float):
    """The least time a step can take: its weight bytes over the measured read bandwidth."""
    return decoder_step_weights(config) * bytes_per_weight / (gb_per_s * 1e9) * 1e3


def memory_bandwidth_run(megabytes: float = 512):
    """A read of a float32 tensor of `megabytes` (`sum`, which streams it once) and its bytes: the
    read bandwidth when timed, with the threads decoding uses. Run it at 512 MB (memory, beyond
    any cache) and at the size of a step's weights: a CPU whose last-level cache holds those
    (some server parts have hundreds of MB) serves a decoding step from the cache, and then the
    second figure is the one that bounds a step."""
    x = torch.ones(int(megabytes * 2**20) // 4)
    return (lambda: x.sum()), x.numel() * 4


def marian_like(ours: VanillaTransformerForConditionalGeneration) -> MarianMTModel:
    """A MarianMTModel of the same shape holding the same weights: embeddings, projections, FFN and
    LayerNorms copied, Marian's attention biases and `final_logits_bias` zero, and its position
    table overwritten with ours (Marian's sinusoids are not interleaved), so that both compute the
    same function (tests/research/test_benchmarking.py checks the logits). A model Marian cannot
    compute (pre-LN, learned positions, an untied output projection, key-norm-sum scaling, an
    encoder and decoder of other shapes) is a ValueError."""
    c = ours.config
    unlike = [
        why
        for why, differs in (
            ("pre-LN (norm_first)", c.norm_first),
            ("learned positions", c.position_encoding != "sinusoidal"),
            # MarianMTModel ties its output projection to the shared embeddings whatever the config
            ("an untied output projection", not c.tie_word_embeddings),
            (f"attention_scaling={c.attention_scaling}", c.attention_scaling != "sqrt_dk"),
            (
                "an encoder and a decoder of other shapes (this copy builds Marian from one shape)",
                (c.encoder_layers, c.encoder_attention_heads, c.encoder_ffn_dim)
                != (c.decoder_layers, c.decoder_attention_heads, c.decoder_ffn_dim),
            ),
        )
        if differs
    ]
    if unlike:
        raise ValueError(f"MarianMTModel (post-LN) cannot compute this model: {', '.join(unlike)}")
    _, marian_config = model_configs(
        {
            "vocab_size": ours.config.vocab_size,
            "d_model": ours.config.d_model,
            "layers": ours.config.encoder_layers,
            "heads": ours.config.encoder_attention_heads,
            "ffn_dim": ours.config.encoder_ffn_dim,
        },
        dropout=ours.config.dropout,
    )
    torch.manual_seed(0)
    marian = MarianMTModel._from_config(
        marian_config, attn_implementation=ours.config._attn_implementation
    )
    marian.generation_config.forced_eos_token_id = None
    marian.generation_config.bad_words_ids = None
    table = sinusoidal_table(marian_config.max_position_embeddings, ours.config.d_model)
    with torch.no_grad():
        marian.model.shared.weight.copy_(ours.model.shared.weight)
        marian.final_logits_bias.zero_()
        stacks = (
            (marian.model.encoder, ours.model.encoder, ("self_attn",)),
            (marian.model.decoder, ours.model.decoder, ("self_attn", "encoder_attn")),
        )
        for theirs, mine, attentions in stacks:
            theirs.embed_positions.weight.copy_(table)
            for their_layer, my_layer in zip(theirs.layers, mine.layers, strict=True):
                for name in attentions:
                    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                        their_linear = getattr(getattr(their_layer, name), proj)
                        their_linear.weight.copy_(getattr(getattr(my_layer, name), proj).weight)
                        their_linear.bias.zero_()
                    getattr(their_layer, f"{name}_layer_norm").load_state_dict(
                        getattr(my_layer, f"{name}_layer_norm").state_dict()
                    )
                their_layer.fc1.load_state_dict(my_layer.ffn.fc1.state_dict())
                their_layer.fc2.load_state_dict(my_layer.ffn.fc2.state_dict())
                their_layer.final_layer_norm.load_state_dict(my_layer.final_layer_norm.state_dict())
    return marian.eval()


def ctranslate2_tokens(vocab_size: int) -> list[str]:
    """Token strings for a random-weights model: CTranslate2 takes tokens, not ids."""
    special = ["<pad>", "<s>", "</s>", "<unk>"]
    return special + [f"t{i}" for i in range(len(special), vocab_size)]


class RandomWeightsVocabulary:
    """The little of a tokenizer that `vanilla_transformer.export.ctranslate2` reads, for a model
    with random weights and no tokenizer: token strings in id order (CTranslate2 takes tokens, not
    ids), and sources that already end as the model was given them (no `</s>` added)."""

    eos_token, unk_token = "</s>", "<unk>"

    def __init__(self, vocab_size: int, eos_token_id: int):
        self.tokens = ctranslate2_tokens(vocab_size)  # the project's ids: <pad> <s> </s> <unk>
        self.eos_token_id = eos_token_id

    def __len__(self) -> int:
        return len(self.tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def __call__(self, text: str):
        # The exporter asks whether the tokenizer appends </s>; "yes" makes CTranslate2 feed the
        # sources exactly as given, as generate() is fed them here.
        return types.SimpleNamespace(input_ids=[4, self.eos_token_id])


def ctranslate2_translator(model, folder: str, quantization: str, threads: int):
    """`model`'s weights converted by the project's CTranslate2 exporter (`quantization`
    "float32" or "int8") and loaded as a `ctranslate2.Translator` with `threads` threads."""
    import ctranslate2

    from vanilla_transformer.export.ctranslate2 import build_ctranslate2_spec

    vocabulary = RandomWeightsVocabulary(model.config.vocab_size, model.config.eos_token_id)
    spec = build_ctranslate2_spec(model, vocabulary)
    spec.optimize(quantization=quantization)
    os.makedirs(folder, exist_ok=True)
    spec.save(folder)
    return ctranslate2.Translator(
        folder, device="cpu", compute_type=quantization, intra_threads=threads, inter_threads=1
    )


def ctranslate2_generate_fn(
    translator, input_ids: torch.Tensor, vocab_size: int, num_beams: int, new_tokens: int
):
    """translate_batch with exactly `new_tokens` output tokens, like `generate_fn`."""
    tokens = ctranslate2_tokens(vocab_size)
    sources = [[tokens[i] for i in row] for row in input_ids.tolist()]

    def run():
        return translator.translate_batch(
            sources,
            beam_size=num_beams,
            min_decoding_length=new_tokens,
            max_decoding_length=new_tokens,
            length_penalty=1.0,
        )

    return run


def legacy_int8(model):
    """The int8 route this project used before torchao: `torch.ao.quantization.quantize_dynamic`
    (fbgemm dynamic int8 Linear, eager), which torch 2.13 deprecates. Measured beside torchao's
    route for the record only; its deprecation warnings are left visible."""
    import copy

    legacy = copy.deepcopy(model).eval()
    return torch.ao.quantization.quantize_dynamic(
        legacy,
        {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
        dtype=torch.qint8,
        inplace=True,
    )


def bench_reference_decoding(
    paths: dict[str, Callable[[torch.Tensor, torch.Tensor, int, int], Callable[[], object]]],
    vocab_size: int,
    settings=REFERENCE_SETTINGS,
    src_len: int = REFERENCE_SRC_LEN,
    new_tokens: int = REFERENCE_NEW_TOKENS,
    repeats: int = 5,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """ms per decoding step of each path for each (label, batch, beams) setting: medians of
    `repeats` interleaved rounds after one warm-up round (which also compiles the compiled paths).
    `paths[name](input_ids, attention_mask, num_beams, new_tokens)` returns the call to time."""
    rows = []
    for label, batch, beams in settings:
        data = random_batch(vocab_size, batch, src_len, 1, seed=batch)
        runs = {
            name: make(data["input_ids"], data["attention_mask"], beams, new_tokens)
            for name, make in paths.items()
        }
        if progress:
            progress(f"{label}: warm-up (compiles the compiled paths)")
        times = alternate(runs, repeats=repeats, warmup=1)
        for name in paths:
            rows.append(
                {
                    "setting": label,
                    "batch": batch,
                    "num_beams": beams,
                    "path": name,
                    "ms_per_step": 1e3 * median(times[name]) / new_tokens,
                    "runs_ms_per_step": [1e3 * t / new_tokens for t in times[name]],
                }
            )
    return rows


# --------------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------------


def machine_info(device: str = "cpu") -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    info["cpu_model"] = cpu_name()
    flags = cpu_flags()
    info["cpu_simd"] = sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)
    info["cpu_flags"] = cpu_features_line(flags)
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    for package in ("transformers", "ctranslate2", "torchao"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# --------------------------------------------------------------------------------------------------
# Real data: token-budget batches against fixed-size random batches
# --------------------------------------------------------------------------------------------------


def bible_lengths(corpus_dir: str, tokenizer_dir: str, max_len: int = 256):
    """(source lengths, target lengths, pairs of ids) of the Bible training split, tokenised with
    the project's tokenizer (`</s>` appended by its post-processor); pairs longer than `max_len`
    are dropped as training drops them."""
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train = datasets.load_from_disk(corpus_dir)["train"]
    src = [row["en"] for row in train["translation"]]
    tgt = [row["es"] for row in train["translation"]]
    src_ids = tokenizer(src)["input_ids"]
    tgt_ids = tokenizer(text_target=tgt)["input_ids"]
    pairs = [
        (s, t)
        for s, t in zip(src_ids, tgt_ids, strict=True)
        if len(s) <= max_len and len(t) <= max_len
    ]
    return pairs, len(tokenizer)


def synthetic_pairs(vocab_size: int, n: int = 20000, seed: int = 0):
    """Fallback when the corpus is missing: lengths drawn like Bible verses (log-normal, mean about
    32 tokens, max 256). Labelled `synthetic` in the results."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.exp(torch.randn(n, 2, generator=g) * 0.5 + 3.3).clamp(2, 256).long().tolist()
    return [([5] * a, [6] * b) for a, b in lengths]


def bench_real_data(
    pairs: list[tuple[list[int], list[int]]],
    shape: str | dict,
    max_tokens: int,
    steps: int,
    seed: int = 0,
) -> dict:
    """Non-padding target tokens/s of training steps: this model on the project's token-budget
    batches, and this model and Marian on fixed-size random batches holding the same mean number of
    sentences (a plain shuffled DataLoader), the three alternating."""
    from vanilla_transformer.recipe.data import (
        TokenBudgetBatchSampler,
        fixed_size_batches,
        padding_stats,
    )

    src_lengths = [len(s) for s, _ in pairs]
    tgt_lengths = [len(t) for _, t in pairs]
    sampler = TokenBudgetBatchSampler(src_lengths, tgt_lengths, max_tokens, seed=seed)
    budget_batches = sampler.all_batches(0)
    batch_size = max(1, round(len(pairs) / len(budget_batches)))
    random_batches = fixed_size_batches(len(pairs), batch_size, seed=seed)
    ours, marian = build_models(shape)
    optimizers = {"ours": make_optimizer(ours), "marian": make_optimizer(marian)}
    plans = {
        "ours_budget": (ours, budget_batches),
        "ours_random": (ours, random_batches),
        "marian_random": (marian, random_batches),
    }
    seconds = {name: 0.0 for name in plans}
    real_tokens = {name: 0 for name in plans}
    for i in range(steps + 1):  # step 0 warms up
        for name, (model, batches) in plans.items():
            batch = padded_batch([pairs[j] for j in batches[i % len(batches)]])
            optimizer = optimizers["ours" if model is ours else "marian"]
            step = training_step_fn(model, optimizer, batch)
            start = time.perf_counter()
            step()
            if i > 0:
                seconds[name] += time.perf_counter() - start
                real_tokens[name] += int((batch["labels"] != -100).sum())
    result = {
        "max_tokens": max_tokens,
        "random_batch_size": batch_size,
        "steps": steps,
        "budget_padding": padding_stats(budget_batches, src_lengths, tgt_lengths)[
            "padding_fraction"
        ],
        "random_padding": padding_stats(random_batches, src_lengths, tgt_lengths)[
            "padding_fraction"
        ],
    }
    for name in plans:
        result[f"{name}_real_tgt_tokens_per_s"] = real_tokens[name] / seconds[name]
    result["budget_vs_marian_random"] = (
        result["ours_budget_real_tgt_tokens_per_s"] / result["marian_random_real_tgt_tokens_per_s"]
    )
    return result


# --------------------------------------------------------------------------------------------------
# GPU extras, BLEU of the quantised model, report
# --------------------------------------------------------------------------------------------------


def bench_compiled_training(
    shape: str, batch: int, src_len: int, tgt_len: int, repeats: int
) -> dict:
    """bf16-autocast training tokens/s of this model under `torch.compile` (CUDA), and whether
    SDPA's flash kernel accepts the model's attention calls (unpadded batch)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ours, _ = build_models(shape)
    ours.to("cuda")
    data = random_batch(ours.config.vocab_size, batch, src_len, tgt_len, "cuda")
    step = training_step_fn(ours, make_optimizer(ours), data, torch.bfloat16)
    out = {}
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            step()
        out["flash_attention_ok"] = True
    except RuntimeError as error:
        out["flash_attention_ok"] = f"no: {str(error)[:120]}"
    ours.forward = torch.compile(ours.forward)
    times = alternate({"compiled": step}, repeats=repeats, warmup=3, device="cuda")
    out["ours_compiled_tokens_per_s"] = batch * tgt_len / median(times["compiled"])
    out["ours_compiled_tflops"] = (
        training_flops(ours.config, batch, src_len, tgt_len) / median(times["compiled"]) / 1e12
    )
    return out


def quantized_bleu(model_dir: str, corpus_dir: str, limit: int | None = None, batch_size: int = 16):
    """BLEU on the Bible test split of a trained model in float32 (the default path) and on the
    fast CPU path in int8 and, where the CPU has native bf16, bf16 (beam 4, the paper's length
    penalty: the model's generation config). Each mode's drop from fp32 should stay within 0.5."""
    import datasets
    import sacrebleu
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from vanilla_transformer.inference import cpu_has_native_bf16, optimize_for_cpu_inference

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    test = datasets.load_from_disk(corpus_dir)["test"]
    rows = test["translation"][:limit] if limit else test["translation"]
    sources = [r["en"] for r in rows]
    references = [r["es"] for r in rows]
    report = {"model": model_dir, "pairs": len(sources)}
    modes = ["int8"] + (["bf16"] if cpu_has_native_bf16() else [])
    candidates = [("fp32", model)] + [(m, optimize_for_cpu_inference(model, m)) for m in modes]
    for name, candidate in candidates:
        hypotheses, start = [], time.perf_counter()
        for i in range(0, len(sources), batch_size):
            batch = tokenizer(sources[i : i + batch_size], return_tensors="pt", padding=True)
            with torch.inference_mode():
                out = candidate.generate(**batch)
            hypotheses += tokenizer.batch_decode(out, skip_special_tokens=True)
        report[f"{name}_bleu"] = sacrebleu.corpus_bleu(hypotheses, [references]).score
        report[f"{name}_seconds"] = time.perf_counter() - start  # compilation included
    for mode in modes:
        report[f"{mode}_bleu_drop"] = report["fp32_bleu"] - report[f"{mode}_bleu"]
        report[f"{mode}_within_half_bleu"] = report[f"{mode}_bleu_drop"] <= 0.5
    return report


def format_reference(ref: dict, machine: dict, command: str | None = None) -> str:
    """The reference decoding comparison as markdown: ms per step of each path in each setting,
    its distance to its bandwidth floor, the target ratios, and the training step vs Marian."""
    rows = ref["decoding"]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    paths = list(dict.fromkeys(r["path"] for r in rows))
    cell = {(r["setting"], r["path"]): r for r in rows}
    flags = machine.get("cpu_flags", "?")
    gb = ref["bandwidth_gb_per_s"]
    weights = ref["decoder_step_weights"]
    floors = ", ".join(
        f"{name} {weights * size / gb / 1e6:.2f} ms" for name, size in WEIGHT_BYTES.items()
    )
    memory = ref.get("memory_bandwidth_gb_per_s")
    lines = [
        f"Decoding, base shape (6+6 layers, d_model 512, d_ff 2048, 8 heads, 8k shared vocabulary, "
        f"random weights, the same in every path), {ref['src_len']}-token sources, exactly "
        f"{ref['new_tokens']} new tokens; ms per step = generate time / {ref['new_tokens']}, "
        "median of interleaved runs.",
        f"CPU flags: {flags}. Measured in this run: read bandwidth {gb:.1f} GB/s over the size "
        f"of a step's fp32 weights ({weights * 4 / 1e6:.0f} MB, read again and again as decoding "
        "does)"
        + (f", {memory:.1f} GB/s over 512 MB" if memory else "")
        + f"; fp32 GEMM peak {ref['training'].get('peak_tflops', 0) * 1e3:.0f} GFLOP/s.",
        f"Bandwidth floor per step ({weights / 1e6:.1f}M decoder + output-projection weights x "
        f"bytes per weight / {gb:.1f} GB/s): {floors}.",
    ]
    if command:
        lines.append(f"Command: `{command}`")
    lines += [
        "",
        "| ms per step | "
        + " | ".join(settings)
        + " | "
        + " | ".join(f"x floor, {s}" for s in settings)
        + " |",
        "|---|" + "---|" * (2 * len(settings)),
    ]
    for path in paths:
        lines.append(
            f"| {path} | "
            + " | ".join(f"{cell[(s, path)]['ms_per_step']:.2f}" for s in settings)
            + " | "
            + " | ".join(f"{cell[(s, path)]['times_floor']:.1f}x" for s in settings)
            + " |"
        )

    def ratio(slow: str, fast: str, setting: str) -> str:
        if (setting, slow) not in cell or (setting, fast) not in cell:
            return "-"
        value = cell[(setting, slow)]["ms_per_step"] / cell[(setting, fast)]["ms_per_step"]
        return f"**{value:.2f}x**"

    fast_paths = [p for p in paths if p.startswith("ours fast")]
    lines += [
        "",
        f"| speed ratio (CPU flags: {flags}) | " + " | ".join(settings) + " | target |",
        "|---|" + "---|" * (len(settings) + 1),
        "| ours default fp32 vs Marian fp32 | "
        + " | ".join(ratio("Marian fp32", "ours default fp32", s) for s in settings)
        + " | >= 1.3x |",
    ]
    for path in fast_paths:
        lines.append(
            f"| {path} vs CTranslate2 int8 | "
            + " | ".join(ratio("CTranslate2 int8", path, s) for s in settings)
            + " | >= 1.0x |"
        )
    t = ref["training"]
    lines += [
        f"| training step vs Marian (base, {t['batch']}x{t['src_len']}x{t['tgt_len']}, "
        f"{1e3 * t['ours_step_s']:.0f} ms vs {1e3 * t['marian_step_s']:.0f} ms) | "
        + " | ".join([f"**{t['ratio']:.2f}x**"] + [""] * (len(settings) - 1))
        + " | >= 1.0x |",
    ]
    return "\n".join(lines)


def format_int8_kernels(kernels: dict[int, dict[str, float | None]]) -> str:
    """The `int8-kernels` part: ms per step of matrix products, by kernel and rows."""
    rows = sorted(kernels)
    lines = [
        "One decoding step's matrix products (base shape: 6 layers x 8 + the output projection), "
        "each timed alone with its weight cache-resident, summed: ms per step, products only.",
        "",
        "| kernel | " + " | ".join(f"{r} row(s)" for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    for name in kernels[rows[0]]:
        cells = [kernels[r][name] for r in rows]
        lines.append(
            f"| {name} | "
            + " | ".join("not in this build" if c is None else f"{c:.2f}" for c in cells)
            + " |"
        )
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def format_report(results: dict) -> str:
    """The results as Markdown tables (what docs/performance.md shows)."""
    m = results["machine"]
    where = m.get("gpu") or f"{m.get('cpu_model', '?')}, {m['cpu_count']} cores"
    lines = [
        f"Machine: {where}; torch {m['torch']} ({m['torch_threads']} threads, "
        f"{m['cpu_capability']}, OMP_WAIT_POLICY={m.get('omp_wait_policy')}), transformers "
        f"{m.get('transformers')}, ctranslate2 {m.get('ctranslate2')}, torchao {m.get('torchao')}; "
        f"{m.get('date', '')}; load average at start {m.get('load_average')}, "
        f"at end {m.get('load_average_end')}",
        f"CPU flags: {m.get('cpu_flags', '?')}",
    ]
    if results.get("reference"):
        lines += ["", format_reference(results["reference"], m, results.get("command"))]
    if results.get("int8_kernels"):
        lines += ["", format_int8_kernels(results["int8_kernels"])]
    if results.get("engines"):
        lines += ["", format_engines(results["engines"], m)]
    for note in results.get("notes", []):
        lines.append(f"- note: {note}")
    if results.get("training"):
        lines += _format_training(results["training"])
    if results.get("real_data"):
        lines += _format_real_data(results["real_data"])
    if results.get("decoding"):
        lines += _format_decoding(results["decoding"])
    return "\n".join(lines)


def _format_training(rows: list[dict]) -> list[str]:
    """The training table: ours against Marian per shape."""
    lines = [
        "",
        "| training | batch x src x tgt | params ours / Marian | tokens/s ours "
        "| tokens/s Marian | ours / Marian | matmul peak TFLOP/s | ours % of peak "
        "| Marian % of peak | peak RSS MB ours / Marian |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rss = (
            f"{r['ours_peak_rss_mb']:.0f} / {r['marian_peak_rss_mb']:.0f}"
            if "ours_peak_rss_mb" in r
            else f"{r['ours_peak_mem_mb']:.0f} / {r['marian_peak_mem_mb']:.0f} (GPU)"
            if "ours_peak_mem_mb" in r
            else "-"
        )
        lines.append(
            f"| {r['shape']} | {r['batch']}x{r['src_len']}x{r['tgt_len']} "
            f"| {r['params_ours'] / 1e6:.2f}M / {r['params_marian'] / 1e6:.2f}M "
            f"| {_fmt(r['ours_tokens_per_s'])} | {_fmt(r['marian_tokens_per_s'])} "
            f"| **{r['ratio']:.2f}x** | {r.get('peak_tflops', 0):.3f} "
            f"| {100 * r.get('ours_fraction_of_peak', 0):.0f}% "
            f"| {100 * r.get('marian_fraction_of_peak', 0):.0f}% | {rss} |"
        )
        if "ours_compiled_tokens_per_s" in r:
            lines.append(
                f"| {r['shape']} (ours, torch.compile) | | | "
                f"{_fmt(r['ours_compiled_tokens_per_s'])} | | | | "
                f"{100 * r['ours_compiled_tflops'] / r['peak_tflops']:.0f}% | | "
                f"flash: {r['flash_attention_ok']} |"
            )
    return lines


def _format_real_data(r: dict) -> list[str]:
    """Token-budget batches against random fixed-size batches on real data."""
    return [
        "",
        f"Real data: {r['data']}, shape {r['shape']}, {r['steps']} steps each. Token-budget "
        f"batches of {r['max_tokens']} tokens ({100 * r['budget_padding']:.0f}% padding) vs "
        f"random batches of {r['random_batch_size']} sentences "
        f"({100 * r['random_padding']:.0f}% padding).",
        "",
        "| real data | non-padding target tokens/s |",
        "|---|---|",
        f"| ours, token-budget batches | {_fmt(r['ours_budget_real_tgt_tokens_per_s'])} |",
        f"| ours, random fixed-size batches | {_fmt(r['ours_random_real_tgt_tokens_per_s'])} |",
        f"| Marian, random fixed-size batches | {_fmt(r['marian_random_real_tgt_tokens_per_s'])} |",
        f"| **ours budget / Marian random** | **{r['budget_vs_marian_random']:.2f}x** |",
    ]


def _format_decoding(rows: list[dict]) -> list[str]:
    """generate() of ours and Marian (and other paths) per batch and beam count."""
    names = [k[: -len("_tokens_per_s")] for k in rows[0] if k.endswith("_tokens_per_s")]
    others = [n for n in names if n != "marian"]
    lines = [
        "",
        f"generate(), shape {rows[0]['shape']}, source {rows[0]['src_len']} tokens, exactly "
        f"{rows[0]['new_tokens']} new tokens; tokens/s counts output tokens (not beams).",
        "",
        "| batch | beams | "
        + " | ".join(f"{n} tok/s" for n in names)
        + " | "
        + " | ".join(f"{n} / Marian" for n in others)
        + " | ms/sentence "
        + " / ".join(names)
        + " |",
        "|---|---|" + "---|" * (len(names) + len(others) + 1),
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['num_beams']} | "
            + " | ".join(_fmt(r[f"{n}_tokens_per_s"]) for n in names)
            + " | "
            + " | ".join(
                f"**{r[f'{n}_tokens_per_s'] / r['marian_tokens_per_s']:.2f}x**" for n in others
            )
            + " | "
            + " / ".join(f"{r[f'{n}_latency_ms_per_sentence']:.0f}" for n in names)
            + " |"
        )
    return lines


# --------------------------------------------------------------------------------------------------
# Engines: one trained model on every engine, the whole test set, sentences/s and BLEU
# --------------------------------------------------------------------------------------------------

ENGINE_SETTINGS = (("greedy", 1), ("beam 4", 4))


class _PaperOutputLimit(torch.nn.Module):
    """MarianMTModel decoding with our output limit (the batch's longest source + 50 tokens) and
    the same options, through `translation.translate_lines`."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def generate(self, **kwargs):
        kwargs.setdefault("max_new_tokens", kwargs["input_ids"].shape[1] + 50)
        return self.model.generate(**kwargs)


def _best(translator):
    return lambda lines, options: [texts[0] for texts in translator.translate(lines, options)]


def direct_ctranslate2(translator):
    """`ctranslate2.Translator.translate_batch` called directly on the batches our CTranslate2
    engine forms, with the arguments it passes, the tokens prepared beforehand: what the engine
    costs beyond CTranslate2 itself. Returns `run(lines, options)` -> best texts."""
    from vanilla_transformer.engines.ctranslate2_engine import tokens_of, translate_batch_arguments
    from vanilla_transformer.translation import token_batches

    prepared = {}

    def batches(lines, options):
        key = (id(lines), options.max_tokens, options.batch_size)
        if key not in prepared:
            encoded = translator.tokenizer(lines).input_ids
            groups = token_batches(
                [len(e) for e in encoded], options.max_tokens, options.batch_size
            )
            prepared[key] = [
                (g, tokens_of(translator.tokenizer, [encoded[i] for i in g])) for g in groups
            ]
        return prepared[key]

    def run(lines, options):
        outputs = [None] * len(lines)
        for group, sources in batches(lines, options):
            longest = max(len(s) for s in sources)
            arguments = translate_batch_arguments(options, longest, translator.position_limit)
            for i, result in zip(
                group, translator.translator.translate_batch(sources, **arguments), strict=True
            ):
                outputs[i] = result.hypotheses[0]
        return outputs

    def texts(lines, options):
        tokenizer = translator.tokenizer
        return [
            tokenizer.decode(tokenizer.convert_tokens_to_ids(t), skip_special_tokens=True).strip()
            for t in run(lines, options)
        ]

    return run, texts


def engine_paths(
    model: str, cache_dir: str | None, threads: int, notes: list[str], fast_int8: bool = True
) -> dict:
    """name -> (timed `run(lines, options)`, `texts(lines, options)` -> best translations) for
    torch plain, torch fast int8 (where the CPU has fast int8), CTranslate2 fp32 / int8 (our engine
    and direct translate_batch), ONNX Runtime fp32 / int8, and MarianMTModel fp32 on the same
    weights. `fast_int8=False` leaves the fast path out (it compiles for minutes per shape).
    """
    from vanilla_transformer.engines import load_translator
    from vanilla_transformer.inference import cpu_has_fast_int8
    from vanilla_transformer.translation import translate_lines

    torch_plain = load_translator(model, "torch", device="cpu")
    paths = {"torch plain fp32": _best(torch_plain)}
    if not fast_int8:
        notes.append("torch fast int8: left out (fast_int8=False)")
    elif cpu_has_fast_int8():
        paths["torch fast int8"] = _best(load_translator(model, "torch", "int8", device="cpu"))
    else:
        notes.append("torch fast int8: refused on this CPU (no VNNI / AMX-INT8): not measured")
    for quantization, label in (("float32", "fp32"), ("int8", "int8")):
        ct2 = load_translator(
            model, "ctranslate2", quantization, cache_dir=cache_dir, threads=threads
        )
        paths[f"CTranslate2 {label}"] = _best(ct2)
        paths[f"CTranslate2 {label}, direct translate_batch"] = direct_ctranslate2(ct2)
    for quantization, label in (("float32", "fp32"), ("int8", "int8")):
        ort = load_translator(
            model, "onnxruntime", quantization, cache_dir=cache_dir, threads=threads
        )
        paths[f"ONNX Runtime {label}"] = _best(ort)
    try:
        marian = _PaperOutputLimit(marian_like(torch_plain.model))
    except ValueError as err:
        notes.append(f"MarianMTModel fp32: left out: {err}")
    else:
        tokenizer = torch_plain.tokenizer
        paths["MarianMTModel fp32"] = lambda lines, options: [
            texts[0] for texts in translate_lines(marian, tokenizer, lines, options)
        ]
    return {name: p if isinstance(p, tuple) else (p, p) for name, p in paths.items()}


def bench_engines(
    paths: dict, lines: list[str], references: list[str], max_tokens: int, repeats: int = 1,
    settings=ENGINE_SETTINGS, progress: Callable[[str], None] | None = None,
) -> list[dict]:  # fmt: skip
    """Per setting and path: sentences/s over all `lines` (median of `repeats` interleaved runs
    after one untimed run, whose outputs are scored: BLEU with sacrebleu's defaults) and the ratio
    to torch plain fp32 measured in the same rounds."""
    from vanilla_transformer.recipe.evaluation import compute_bleu
    from vanilla_transformer.translation import DecodingOptions

    rows = []
    for label, beams in settings:
        options = DecodingOptions(num_beams=beams, max_tokens=max_tokens, batch_size=10_000)
        bleu = {}
        for name, (_, texts) in paths.items():
            if progress:
                progress(f"{label}: {name} (untimed run, scored)")
            bleu[name] = compute_bleu(texts(lines, options), references)["bleu"]
        runs = {name: functools.partial(run, lines, options) for name, (run, _) in paths.items()}
        times = alternate(runs, repeats=repeats, warmup=0)
        plain = median(times["torch plain fp32"])
        for name in paths:
            seconds = median(times[name])
            rows.append(
                {
                    "setting": label,
                    "path": name,
                    "seconds": seconds,
                    "sentences_per_s": len(lines) / seconds,
                    "vs_torch_plain": plain / seconds,
                    "bleu": bleu[name],
                    "bleu_vs_torch_plain": bleu[name] - bleu["torch plain fp32"],
                }
            )
    return rows


def format_engines(result: dict, machine: dict) -> str:
    """The engines table (markdown) with the CPU and the engine / direct CTranslate2 ratios."""
    rows = result["rows"]
    lines = [
        f"Engines on {result['data']} ({result['lines']} lines), model {result['model']}, "
        f"batches of at most {result['max_tokens']} source tokens, {result['threads']} threads; "
        f"CPU: {machine.get('cpu_model', '?')} ({machine.get('cpu_flags', '?')}). x torch: "
        "sentences/s over torch plain fp32 in the same rounds.",
        "",
        "| setting | path | sentences/s | x torch plain | BLEU | BLEU - torch plain |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['path']} | {r['sentences_per_s']:.1f} "
            f"| **{r['vs_torch_plain']:.2f}x** | {r['bleu']:.2f} | {r['bleu_vs_torch_plain']:+.2f} |"
        )
    by = {(r["setting"], r["path"]): r for r in rows}
    ratios = [
        f"{setting} {label} {by[(setting, f'CTranslate2 {label}')]['seconds'] / by[(setting, direct)]['seconds']:.3f}"
        for setting, _ in ENGINE_SETTINGS
        for label in ("fp32", "int8")
        if (setting, direct := f"CTranslate2 {label}, direct translate_batch") in by
    ]
    if ratios:
        lines += ["", "Our CTranslate2 engine's time / direct translate_batch on the same batches "
                  "(target <= 1.05): " + ", ".join(ratios)]  # fmt: skip
    return "\n".join(lines)
