"""Speed benchmarks of this model against transformers' `MarianMTModel` of identical shape.

Both models are built with the same dimensions (ReLU, shared vocabulary, tied embeddings, scaled
embeddings, SDPA attention), fed the same inputs, and timed alternately (A B A B ...) after a
warm-up, so that a load spike on a shared machine hits both: the medians and, above all, the ratios
(this model / Marian) are what to read. Marian's projections carry biases and it adds a
`final_logits_bias`; ours have none, so its parameter count is slightly larger (both are reported).

`scripts/benchmark.py` is the command line; the functions here are importable for tests.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable

import torch
from transformers import MarianConfig, MarianMTModel

from vanilla_transformer.configuration_vanilla_transformer import VanillaTransformerConfig
from vanilla_transformer.modeling_vanilla_transformer import (
    VanillaTransformerForConditionalGeneration,
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
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
        flags = open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n", 1)[0].split()
        info["cpu_simd"] = sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)
    except (OSError, IndexError):
        pass
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
    """BLEU on the Bible test split of a trained model in float32 and after int8 quantisation
    (beam 4, the paper's length penalty: the model's generation config)."""
    import datasets
    import sacrebleu
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from vanilla_transformer.inference import optimize_for_cpu_inference

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    test = datasets.load_from_disk(corpus_dir)["test"]
    rows = test["translation"][:limit] if limit else test["translation"]
    sources = [r["en"] for r in rows]
    references = [r["es"] for r in rows]
    report = {"model": model_dir, "pairs": len(sources)}
    for name, candidate in (("fp32", model), ("int8", optimize_for_cpu_inference(model, "int8"))):
        hypotheses, start = [], time.perf_counter()
        for i in range(0, len(sources), batch_size):
            batch = tokenizer(sources[i : i + batch_size], return_tensors="pt", padding=True)
            with torch.inference_mode():
                out = candidate.generate(**batch)
            hypotheses += tokenizer.batch_decode(out, skip_special_tokens=True)
        report[f"{name}_bleu"] = sacrebleu.corpus_bleu(hypotheses, [references]).score
        report[f"{name}_seconds"] = time.perf_counter() - start
    report["bleu_drop"] = report["fp32_bleu"] - report["int8_bleu"]
    report["int8_within_half_bleu"] = report["bleu_drop"] <= 0.5
    return report


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def format_report(results: dict) -> str:
    """The results as Markdown tables (what docs/performance.md shows)."""
    m = results["machine"]
    where = m.get("gpu") or f"{m.get('cpu_model', '?')}, {m['cpu_count']} cores"
    lines = [
        f"Machine: {where}; torch {m['torch']} ({m['torch_threads']} threads, "
        f"{m['cpu_capability']}); load average at start {m.get('load_average')}, "
        f"at end {m.get('load_average_end')}",
        "",
        "| training | batch x src x tgt | params ours / Marian | tokens/s ours | tokens/s Marian "
        "| ours / Marian | matmul peak TFLOP/s | ours % of peak | Marian % of peak "
        "| peak RSS MB ours / Marian |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["training"]:
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
    if results.get("real_data"):
        r = results["real_data"]
        lines += [
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
            f"| Marian, random fixed-size batches | "
            f"{_fmt(r['marian_random_real_tgt_tokens_per_s'])} |",
            f"| **ours budget / Marian random** | **{r['budget_vs_marian_random']:.2f}x** |",
        ]
    if results.get("decoding"):
        rows = results["decoding"]
        names = [k[: -len("_tokens_per_s")] for k in rows[0] if k.endswith("_tokens_per_s")]
        others = [n for n in names if n != "marian"]
        lines += [
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
    return "\n".join(lines)
