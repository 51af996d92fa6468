"""Benchmark this model against transformers' MarianMTModel of identical shape (training, real-data
batching, generate()), plus the opt-in int8 CPU inference path.

    python scripts/benchmark.py                      # full run (CPU: ~15-30 min on 2 cores)
    python scripts/benchmark.py --quick              # tiny shape, < 2 minutes
    python scripts/benchmark.py --device cuda        # bf16 autocast training, GPU decoding
    python scripts/benchmark.py quantized-bleu --model outputs/run1   # BLEU fp32 vs fast int8/bf16
    python scripts/benchmark.py ensemble-table --model runs/cpu-small --last 5 --markdown t.md
                                   # last checkpoint vs average vs ensemble of the last 5

    # The reference decoding comparison (base shape, every path on the same weights: ours,
    # Marian, CTranslate2, the fast CPU path; training vs Marian; bandwidth and GEMM peak):
    python scripts/benchmark.py --parts reference --threads 2 --markdown reference.md

    # Every engine on one trained model over the Bible test set (758 verses), greedy and beam 4:
    # sentences/s and BLEU (torch plain / fast int8, CTranslate2, ONNX Runtime, Marian):
    python scripts/benchmark.py --parts engines --model runs/base/hub --threads 2 --markdown engines.md

Models are timed alternately (A B A B) after a warm-up: on a shared machine read the ratios.
"""

import os
import sys

# Must precede the OpenMP runtime's start (the torch import). With the default (active) waiting,
# torch's worker threads spin at every parallel region's barrier; on a CPU shared with other
# processes a spinning thread waits for a descheduled partner, and a tiny training step measured
# 1.5-5 s instead of 0.19 s here. Passive waiting costs a few microseconds per region when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The package's log filters go in before transformers imports torchao (quiet_imports).
import vanilla_transformer  # noqa: E402, F401

# isort: split
import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from research import benchmarking as bm  # noqa: E402
from vanilla_transformer.inference import cpu_has_native_bf16, optimize_for_cpu_inference  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "quantized-bleu", "ensemble-table"],
        help="run: the benchmark (default); quantized-bleu: BLEU of a trained model on the "
        "Bible test set, default fp32 path vs the fast CPU path in int8 (and bf16 where native); "
        "ensemble-table: BLEU, chrF and sentences/s of a run's (--model) last checkpoint, the "
        "average of its last --last and their ensemble, on its test split",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["training", "real", "decoding"],
        choices=["training", "real", "decoding", "reference", "int8-kernels", "engines", "server"],
        help="which benchmarks to run (default: training real decoding). reference: decoding "
        "at the reference shape on the same weights (ours default / fast fp32, int8, bf16 where "
        "native; Marian; CTranslate2 fp32 and int8), a training step vs Marian, the memory "
        "bandwidth and GEMM peak, each path against its bandwidth floor (about 3-5 min on 2 quiet cores). "
        "int8-kernels: one reference-shape step's matrix products through each CPU int8 kernel "
        "(and fp32), each product timed alone (under a minute). engines: a trained --model on "
        "every engine (torch plain, torch fast int8 where accepted, CTranslate2 fp32/int8 and "
        "direct translate_batch, ONNX Runtime fp32/int8, MarianMTModel fp32) over the Bible test "
        "set (or --lines/--references), greedy and beam 4: sentences/s and BLEU. server: a load "
        "test of vanilla-transformer-serve --model on localhost (research/server_load.py; "
        "--server-*) over the same verses",
    )
    _synthetic_arguments(parser.add_argument_group("training, real, decoding, reference"))
    _trained_model_arguments(
        parser.add_argument_group(
            "a trained model: engines, server, quantized-bleu, ensemble-table"
        )
    )
    _server_arguments(parser.add_argument_group("server"))
    parser.add_argument(
        "--last", type=int, default=5, help="ensemble-table: how many checkpoints (default 5)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="quantized-bleu, ensemble-table: first N test pairs"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--markdown", default=None, help="also write the report (markdown tables) to this file"
    )
    parser.add_argument(
        "--ctranslate2-dir",
        default=None,
        help="reference: where the converted CTranslate2 models go (default: a temporary folder)",
    )
    return parser.parse_args()


def _synthetic_arguments(group) -> None:
    """The parts timed on random weights and synthetic or real batches."""
    group.add_argument(
        "--quick", action="store_true", help="tiny shape only, few repeats (< 2 min)"
    )
    group.add_argument("--device", default="cpu", help="cpu or cuda")
    group.add_argument(
        "--shapes",
        nargs="+",
        default=None,
        help=f"shapes to train ({', '.join(bm.SHAPES)}); default base tiny "
        "(cpu), base big (cuda), tiny (--quick)",
    )
    group.add_argument("--batch", type=int, default=None, help="training batch (sentences)")
    group.add_argument("--src-len", type=int, default=32, help="training source length")
    group.add_argument("--tgt-len", type=int, default=32, help="training target length")
    group.add_argument("--repeats", type=int, default=None, help="timed rounds per measurement")
    group.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    group.add_argument("--decode-shape", default=None, help="shape for generate() (default base)")
    group.add_argument(
        "--new-tokens",
        type=int,
        default=32,
        help="generated tokens per sentence (min = max, so both models match)",
    )
    group.add_argument("--max-tokens", type=int, default=2500, help="token budget of real batches")
    group.add_argument("--real-steps", type=int, default=None, help="training steps on real data")
    group.add_argument(
        "--corpus",
        default=str(ROOT / "data_cache/bible/kjv-rv1909"),
        help="Bible corpus folder (save_to_disk) for the real-data benchmark",
    )
    group.add_argument(
        "--tokenizer",
        default=str(ROOT / "data_cache/tokenizer"),
        help="tokenizer folder for the real-data benchmark",
    )
    group.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure peak training memory in subprocesses (default: on unless --quick)",
    )
    group.add_argument("--compile", action="store_true", help="also time torch.compile (cuda)")


def _trained_model_arguments(group) -> None:
    """The parts that measure a trained model (--model) on its data."""
    group.add_argument(
        "--model",
        default=None,
        help="quantized-bleu, engines, server: trained model folder; ensemble-table: run folder",
    )
    group.add_argument(
        "--lines", default=None, help="engines: source lines (default: the Bible test set)"
    )
    group.add_argument("--references", default=None, help="engines: references of --lines")
    group.add_argument(
        "--engine-cache",
        default=None,
        help="engines: where the exports go (default: vanilla_transformer.engines' cache)",
    )


def _server_arguments(group) -> None:
    """The load test of vanilla-transformer-serve."""
    group.add_argument(
        "--server-clients", type=int, default=16, help="server: concurrent httpx clients"
    )
    group.add_argument(
        "--server-libretranslate-clients",
        type=int,
        default=2,
        help="server: concurrent libretranslatepy clients (threads)",
    )
    group.add_argument(
        "--server-requests", type=int, default=200, help="server: texts sent in each phase"
    )
    group.add_argument(
        "--server-seconds", type=float, default=300, help="server: time limit of each phase"
    )
    group.add_argument(
        "--server-flags",
        default="--num_beams 4",
        help="server: flags of vanilla-transformer-serve, e.g. '--engine ctranslate2'",
    )


def run_training(args, results):
    cuda = args.device.startswith("cuda")
    shapes = args.shapes or (
        ["tiny"] if args.quick else ["base", "big"] if cuda else ["base", "tiny"]
    )
    batch = args.batch or (64 if cuda else 32)
    repeats = args.repeats or (3 if args.quick else 10 if cuda else 5)
    for shape in tqdm(shapes, desc="training"):
        row = bm.bench_training(
            shape,
            batch,
            args.src_len,
            args.tgt_len,
            repeats,
            args.device,
            autocast_dtype=torch.bfloat16 if cuda else None,
        )
        if cuda and args.compile:
            row.update(
                bm.bench_compiled_training(shape, batch, args.src_len, args.tgt_len, repeats)
            )
        if args.memory if args.memory is not None else not (args.quick or cuda):
            for kind in ("ours", "marian"):
                row[f"{kind}_peak_rss_mb"] = bm.peak_training_memory_mb(
                    kind, shape, batch, args.src_len, args.tgt_len
                )
        results["training"].append(row)


def run_real_data(args, results):
    shape = "tiny" if args.quick else "base"
    steps = args.real_steps or (3 if args.quick else 6)
    if Path(args.corpus).exists() and Path(args.tokenizer).exists():
        pairs, vocab = bm.bible_lengths(args.corpus, args.tokenizer)
        source = f"Bible train split ({Path(args.corpus).name}), {len(pairs)} pairs"
    else:
        vocab = 8000
        pairs = bm.synthetic_pairs(vocab)
        source = "SYNTHETIC log-normal lengths (corpus or tokenizer missing)"
    dims = {**bm.SHAPES[shape], "vocab_size": vocab}
    row = bm.bench_real_data(pairs, dims, args.max_tokens, steps)
    row.update(shape=shape, data=source)
    results["real_data"] = row


def run_decoding(args, results):
    shape = args.decode_shape or ("tiny" if args.quick else "base")
    ours, marian = bm.build_models(shape)
    models = {"ours": ours.to(args.device), "marian": marian.to(args.device)}
    if not args.device.startswith("cuda"):
        models["ours_int8"] = optimize_for_cpu_inference(ours, "int8")
        models["ours_fast_fp32"] = optimize_for_cpu_inference(ours, "fp32")
        if cpu_has_native_bf16():
            models["ours_bf16"] = optimize_for_cpu_inference(ours, "bf16")
    rows = bm.bench_decoding(
        models,
        ours.config.vocab_size,
        new_tokens=args.new_tokens,
        repeats=args.repeats or (3 if args.quick else 5),
        device=args.device,
    )
    for row in rows:
        row["shape"] = shape
    results["decoding"] = rows


def _reference_paths(ours, args, results) -> tuple[dict, dict]:
    """The decoding paths of the reference comparison on `ours`' weights (name -> a function
    making one setting's run) and each path's bytes per weight; what cannot run is a note."""
    import tempfile

    from vanilla_transformer.inference import MODES

    threads = torch.get_num_threads()
    bytes_per_weight = {"ours default fp32": 4, "Marian fp32": 4}

    def hf(model):
        def make(input_ids, mask, beams, new_tokens):
            inputs = {"input_ids": input_ids, "attention_mask": mask}
            return bm.generate_fn(model, inputs, beams, new_tokens)

        return make

    def fast(mode):
        def make(input_ids, mask, beams, new_tokens):
            # A fresh copy per setting: each compiles for its own (static) shapes.
            model = optimize_for_cpu_inference(ours, mode)
            return hf(model)(input_ids, mask, beams, new_tokens)

        return make

    paths = {"ours default fp32": hf(ours), "Marian fp32": hf(bm.marian_like(ours))}
    workdir = args.ctranslate2_dir or tempfile.mkdtemp(prefix="ct2-")
    try:
        import ctranslate2  # noqa: F401

        for quantization in ("float32", "int8"):
            translator = bm.ctranslate2_translator(
                ours, str(Path(workdir) / quantization), quantization, threads
            )
            name = f"CTranslate2 {'fp32' if quantization == 'float32' else 'int8'}"
            paths[name] = (
                lambda t: (
                    lambda ids, mask, beams, n: bm.ctranslate2_generate_fn(
                        t, ids, ours.config.vocab_size, beams, n
                    )
                )
            )(translator)
            bytes_per_weight[name] = 4 if quantization == "float32" else 1
    except ImportError:
        results["notes"].append("CTranslate2 not installed (pip install ctranslate2): not measured")
    for mode in MODES:
        if mode == "bf16" and not cpu_has_native_bf16():
            results["notes"].append("bf16: no native bf16 on this CPU (never emulated): skipped")
            continue
        try:
            optimize_for_cpu_inference(ours, mode, compile=False)
        except ImportError as error:
            results["notes"].append(f"fast {mode}: {error}")
            continue
        name = f"ours fast {mode}"
        paths[name] = fast(mode)
        bytes_per_weight[name] = bm.WEIGHT_BYTES[mode]
    paths["ours int8, torch.ao (deprecated, eager)"] = hf(bm.legacy_int8(ours))
    bytes_per_weight["ours int8, torch.ao (deprecated, eager)"] = 1
    return paths, bytes_per_weight


def run_reference(args, results):
    """Every decoding path at the reference shape on one set of random base weights."""
    # Training first, while the process holds no compiled model and no CTranslate2 thread pool.
    tqdm.write("training step, ours vs Marian (base)")
    training = bm.bench_training(
        "base", 8, bm.REFERENCE_SRC_LEN, bm.REFERENCE_NEW_TOKENS, args.repeats or 5
    )
    ours, _ = bm.build_models("base")
    ours.eval()
    paths, bytes_per_weight = _reference_paths(ours, args, results)

    weights = bm.decoder_step_weights(ours.config)
    readers = {
        "step": bm.memory_bandwidth_run(weights * 4 / 2**20),
        "memory": bm.memory_bandwidth_run(512),
    }

    def bandwidth() -> dict[str, list[float]]:
        times = bm.alternate({name: fn for name, (fn, _) in readers.items()}, 5)
        return {name: [readers[name][1] / t for t in times[name]] for name in readers}

    before = bandwidth()
    rows = bm.bench_reference_decoding(
        paths,
        ours.config.vocab_size,
        repeats=args.repeats or 5,
        progress=lambda message: tqdm.write(message),
    )
    after = bandwidth()
    gb_per_s = bm.median(before["step"] + after["step"]) / 1e9
    for row in rows:
        row["bytes_per_weight"] = bytes_per_weight[row["path"]]
        row["floor_ms"] = bm.bandwidth_floor_ms(ours.config, row["bytes_per_weight"], gb_per_s)
        row["times_floor"] = row["ms_per_step"] / row["floor_ms"]
    results["reference"] = {
        "decoding": rows,
        "training": training,
        "bandwidth_gb_per_s": gb_per_s,
        "memory_bandwidth_gb_per_s": bm.median(before["memory"] + after["memory"]) / 1e9,
        "decoder_step_weights": weights,
        "src_len": bm.REFERENCE_SRC_LEN,
        "new_tokens": bm.REFERENCE_NEW_TOKENS,
    }


def engine_test_set(args) -> tuple[list[str], list[str], str]:
    """(sources, references, description): --lines and --references, else the Bible test split
    through the recipe's corpus loader (built once into data_cache/bible)."""
    if args.lines:
        if not args.references:
            raise SystemExit("--lines needs --references (one reference per line)")
        sources = Path(args.lines).read_text(encoding="utf-8").splitlines()
        references = Path(args.references).read_text(encoding="utf-8").splitlines()
        if len(sources) != len(references):
            raise SystemExit(f"{len(sources)} lines but {len(references)} references")
        return sources, references, args.lines
    from vanilla_transformer.recipe.options import CorpusOptions

    test = CorpusOptions(bible_cache_dir=str(ROOT / "data_cache/bible")).load()["test"]
    rows = test["translation"]
    return [r["en"] for r in rows], [r["es"] for r in rows], "the Bible test set"


def run_engines(args, results):
    if not args.model:
        raise SystemExit(
            "--parts engines needs --model FOLDER (a trained model with its tokenizer)"
        )
    sources, references, data = engine_test_set(args)
    threads = torch.get_num_threads()
    paths = bm.engine_paths(args.model, args.engine_cache, threads, results["notes"])
    rows = bm.bench_engines(
        paths,
        sources,
        references,
        args.max_tokens,
        repeats=args.repeats or 1,
        progress=lambda message: tqdm.write(message),
    )
    results["engines"] = {
        "rows": rows,
        "data": data,
        "lines": len(sources),
        "model": args.model,
        "max_tokens": args.max_tokens,
        "threads": threads,
    }


def run_server(args, results):
    """The server load test over the engines' test set (the Bible test verses, or --lines)."""
    import shlex

    from research import server_load

    if not args.model:
        raise SystemExit("--parts server needs --model FOLDER (a trained model with its tokenizer)")
    texts, _, _ = engine_test_set(args)
    results["server"] = server_load.load_test(
        args.model,
        texts,
        "en",
        "es",
        clients=args.server_clients,
        libretranslate_clients=args.server_libretranslate_clients,
        requests=args.server_requests,
        seconds=args.server_seconds,
        server_flags=shlex.split(args.server_flags),
    )


def quantized_bleu(args):
    if not args.model:
        raise SystemExit("quantized-bleu needs --model FOLDER (a trained model with its tokenizer)")
    report = bm.quantized_bleu(args.model, args.corpus, limit=args.limit)
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


def ensemble_table(args):
    from research.ensemble_table import ensemble_table, format_ensemble_table

    if not args.model:
        raise SystemExit(
            "ensemble-table needs --model RUN_FOLDER (a training run with checkpoints)"
        )
    rows = ensemble_table(args.model, last=args.last, max_samples=args.limit, device=args.device)
    table = format_ensemble_table(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "quantized-bleu":
        return quantized_bleu(args)
    if args.command == "ensemble-table":
        return ensemble_table(args)
    results = {
        "machine": bm.machine_info(args.device),
        "quick": args.quick,
        "training": [],
        "notes": [],
        "command": " ".join(["python", "scripts/benchmark.py", *sys.argv[1:]]),
    }
    if "training" in args.parts:
        run_training(args, results)
    if "real" in args.parts and not args.device.startswith("cuda"):
        run_real_data(args, results)
    if "decoding" in args.parts:
        run_decoding(args, results)
    if "reference" in args.parts:
        run_reference(args, results)
    if "engines" in args.parts:
        run_engines(args, results)
    if "int8-kernels" in args.parts:
        config, _ = bm.model_configs("base")
        results["int8_kernels"] = {
            rows: bm.int8_kernel_step_ms(config, rows, repeats=args.repeats or 5)
            for rows in (1, 8 * 4)  # greedy batch 1; beam 4, batch 8
        }
    if "server" in args.parts:
        run_server(args, results)
    results["machine"]["load_average_end"] = os.getloadavg()
    report = bm.format_report(results)
    if results.get("server"):
        from research.server_load import format_load_report

        report += "\n\n" + format_load_report(results["server"])
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
