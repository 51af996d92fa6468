"""The training recipe (vanilla_transformer/recipe/: training_config.py, loop.py,
training_callbacks.py, training.py; see docs/training.md) and its CLI (scripts/train.py).

Runs of the real script use a tiny model on an in-test corpus: a toy "translation" that maps each
English word to a made-up Spanish word, so a few updates visibly lower the loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.conftest import (
    word_tokenizer,
    write_jsonl,
)
from vanilla_transformer.loading import (
    check_safetensors_file,
)
from vanilla_transformer.recipe.checkpoints import (
    STATE_FILE,
    complete_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from vanilla_transformer.recipe.loop import TrainingCallback, label_smoothed_loss, noam_lambda
from vanilla_transformer.recipe.tokenization import train_tokenizer
from vanilla_transformer.recipe.training_config import PRESETS, load_config_file, resolve_config

REPO = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO / "scripts" / "train.py"
LEXICON = {
    "the": "el",
    "king": "rey",
    "said": "dijo",
    "to": "á",
    "his": "sus",
    "servants": "siervos",
    "and": "y",
    "people": "pueblo",
    "went": "fué",
    "up": "arriba",
    "city": "ciudad",
    "of": "de",
    "god": "dios",
    "house": "casa",
    "land": "tierra",
    "sons": "hijos",
    "came": "vino",
    "great": "grande",
    "water": "agua",
    "day": "día",
}
TINY_MODEL = [
    *"--d_model 32 --ffn_dim 64 --attention_heads 4 --encoder_layers 1".split(),
    *"--decoder_layers 1 --max_position_embeddings 64 --max_source_length 32".split(),
    *"--max_target_length 32 --batch_tokens 300 --update_tokens 300 --warmup_steps 4".split(),
    *"--lr_factor 0.5 --log_with none --threads 1 --logging_steps 1".split(),
]
QUIET = ["--eval_steps", "0", "--final_eval_splits", "", "--no_save_hub", "--average_last", "1"]


def _pairs(n: int, rng: random.Random) -> list[dict]:
    words = list(LEXICON)
    rows = []
    for _ in range(n):
        en = [rng.choice(words) for _ in range(rng.randint(3, 8))]
        rows.append({"translation": {"en": " ".join(en), "es": " ".join(LEXICON[w] for w in en)}})
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """train/validation/test JSONL files and a byte-level BPE tokenizer trained on them."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 400), ("validation", 12), ("test", 12)):
        lines = [json.dumps(row, ensure_ascii=False) for row in _pairs(n, rng)]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    texts = [r["translation"][k] for r in _pairs(400, random.Random(0)) for k in ("en", "es")]
    train_tokenizer(texts, vocab_size=300, model_max_length=64).save_pretrained(root / "tok")
    return root


def run_train(corpus: Path, out: Path, *flags: str, processes: int = 1, check: bool = True):
    """scripts/train.py in a subprocess (through `accelerate launch` for several processes)."""
    args = [
        "--dataset",
        str(corpus / "data"),
        "--tokenizer",
        str(corpus / "tok"),
        "--output_dir",
        str(out),
        *TINY_MODEL,
        *flags,
    ]
    if processes == 1:
        command = [sys.executable, str(TRAIN_SCRIPT), *args]
    else:
        # `--multi_gpu` picks accelerate's torchrun launcher; on a machine without GPUs the
        # script then builds a gloo CPU group. (`--cpu` alone starts a single process.)
        command = [
            sys.executable,
            *"-m accelerate.commands.launch --multi_gpu --num_processes".split(),
            str(processes),
            *"--num_machines 1 --mixed_precision no --dynamo_backend no".split(),
            str(TRAIN_SCRIPT),
            *args,
        ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONHASHSEED": "0",
    }
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(complete_checkpoints(out)[-1] / "model.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def train_log(out: Path) -> list[dict]:
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# --------------------------------------------------------------------------------------------------
# Loss, schedule, configuration
# --------------------------------------------------------------------------------------------------


def test_label_smoothed_loss_equals_cross_entropy_against_the_smoothed_distribution():
    torch.manual_seed(0)
    B, T, V, eps = 3, 5, 11, 0.1
    logits = torch.randn(B, T, V)
    labels = torch.randint(0, V, (B, T))
    labels[0, 3:] = -100
    labels[2, 1] = -100
    loss, nll, count = label_smoothed_loss(logits, labels, eps)

    keep = labels != -100
    target = torch.full((B, T, V), eps / V)  # eps spread over the whole vocabulary ...
    target.scatter_add_(-1, labels.clamp_min(0).unsqueeze(-1), torch.full((B, T, 1), 1 - eps))
    direct = -(target * F.log_softmax(logits, -1)).sum(-1)[keep].sum()  # ... 1 - eps on the label
    torch.testing.assert_close(loss, direct)
    assert count.item() == keep.sum().item()
    ce = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(nll, ce)
    torch.testing.assert_close(label_smoothed_loss(logits, labels, 0.0)[0], ce)


def test_noam_schedule_values_and_peak_at_warmup():
    d_model, warmup, factor = 512, 4000, 2.0
    lr = noam_lambda(d_model, warmup, factor)
    peak = factor * (d_model * warmup) ** -0.5
    assert lr(warmup) == pytest.approx(peak)
    assert lr(1) == pytest.approx(peak / warmup)  # linear warm-up from step 1
    assert lr(0) == lr(1)  # the first update already has a non-zero rate
    assert lr(warmup // 2) == pytest.approx(peak / 2)
    assert lr(4 * warmup) == pytest.approx(peak / 2)  # inverse square root decay
    assert max(range(1, 3 * warmup), key=lr) == warmup

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, noam_lambda(16, 4, 1.0))
    seen = []
    for _ in range(8):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert seen[4] == pytest.approx(16**-0.5 * 4**-0.5) == max(seen)


def test_presets_hold_the_paper_values_and_files_and_flags_override_them(tmp_path):
    base, big = resolve_config("base"), resolve_config("big")
    assert (base.d_model, base.ffn_dim, base.attention_heads, base.encoder_layers) == (
        512,
        2048,
        8,
        6,
    )
    assert (big.d_model, big.ffn_dim, big.attention_heads, big.dropout) == (1024, 4096, 16, 0.3)
    assert (base.max_steps, big.max_steps, base.warmup_steps) == (100000, 300000, 4000)
    assert (base.adam_beta1, base.adam_beta2, base.adam_epsilon) == (0.9, 0.98, 1e-9)
    assert base.label_smoothing == 0.1 and base.update_tokens == 50000 and not base.norm_first
    # Bounded by updates (the same model on every machine), minutes only as an option.
    assert PRESETS["cpu-small"]["max_steps"] == 5500
    assert PRESETS["cpu-small"]["max_train_minutes"] == 0

    (tmp_path / "run.yaml").write_text("preset: cpu-small\nlr_factor: 0.5\nd_model: 256\n")
    config = resolve_config(file_values=load_config_file(tmp_path / "run.yaml"), d_model=128)
    assert config.preset == "cpu-small" and config.norm_first  # from the preset
    assert config.lr_factor == 0.5  # the file beats the preset
    assert config.d_model == 128  # a flag beats the file
    with pytest.raises(ValueError, match="unknown training options.*learning_rate"):
        resolve_config(learning_rate=1e-3)
    with pytest.raises(ValueError, match="preset must be one of"):
        resolve_config("huge")


# The flags scripts/main.sh passed to scripts/train.py before the cpu-small preset carried them
# (with the tokenizer it made by `scripts/train_tokenizer.py --vocab_size 4000 --model_max_length
# 256` into data_cache/tokenizer-bpe4k when missing).
MAIN_JOB_FLAGS = """--preset cpu-small --bible_cache_dir data_cache/bible --tokenizer
    data_cache/tokenizer-bpe4k --output_dir runs/cpu-small --max_steps 5500 --max_train_minutes 0
    --average_last 5 --final_eval_splits validation,test --hub_folder runs/cpu-small/hub"""


def test_the_cpu_small_preset_alone_trains_exactly_what_the_main_job_trains():
    from vanilla_transformer.cli.train import parse_args

    preset = resolve_config(**parse_args(["--preset", "cpu-small"]))
    main_job = resolve_config(**parse_args(MAIN_JOB_FLAGS.split()))
    assert preset.final_hub_folder == main_job.final_hub_folder == Path("runs/cpu-small/hub")
    assert dataclasses.replace(preset, hub_folder=None) == dataclasses.replace(
        main_job, hub_folder=None
    )
    # A run that finds no tokenizer there trains the one main.sh trained, at the same path.
    assert (preset.tokenizer_vocab_size, preset.max_position_embeddings) == (4000, 256)
    main_sh = (REPO / "scripts" / "main.sh").read_text()
    assert "scripts/train.py --preset cpu-small --overwrite_output_dir" in main_sh
    assert "--tokenizer" not in main_sh and "train_tokenizer.py" not in main_sh


def test_each_preset_has_its_own_run_folder_and_a_flag_still_overrides_it():
    folders = {name: resolve_config(name).output_dir for name in PRESETS}
    assert folders == {name: f"runs/{name}" for name in PRESETS}
    assert resolve_config().output_dir == "runs/default"
    assert resolve_config("base", output_dir="elsewhere").final_hub_folder == Path("elsewhere/hub")


# --------------------------------------------------------------------------------------------------
# The real script
# --------------------------------------------------------------------------------------------------


def test_train_script_lowers_the_loss_and_writes_the_hub_folder(corpus, tmp_path):
    out = tmp_path / "run"
    run_train(
        corpus,
        out,
        *"--max_steps 30 --lr_factor 1.0 --eval_steps 15 --eval_bleu_samples 4".split(),
        *"--eval_num_beams 1 --checkpoint_steps 10 --keep_last 3 --average_last 2".split(),
        *"--final_num_beams 1".split(),
    )
    losses = [r["train/loss"] for r in train_log(out) if "train/loss" in r]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, (first, last)
    assert [r["step"] for r in train_log(out) if "val/loss" in r] == [15, 30]
    assert [p.name for p in complete_checkpoints(out)] == [
        "checkpoint_10",
        "checkpoint_20",
        "checkpoint_30",
    ]
    # No state that accelerate would unpickle with weights_only=False (its custom objects).
    assert not list(out.glob("checkpoints/*/custom_checkpoint_*"))
    assert "scheduler" in json.loads(
        (out / "checkpoints/checkpoint_30/trainer_state.json").read_text()
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["skipped_updates"] == 0
    check = summary["averaging_check"]
    assert check["averaged"] == ["checkpoint_20", "checkpoint_30"]
    if check["kept"] == "average":
        assert "checkpoint_20, checkpoint_30" in summary["averaging"]
    assert set(summary["scores"]) == {"validation", "test"}
    hub = Path(summary["hub_folder"])
    for name in (
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modeling_vanilla_transformer.py",
        "pipeline_vanilla_transformer.py",
    ):
        assert (hub / name).is_file(), name
    card = (hub / "README.md").read_text()
    assert summary["scores"]["test"]["bleu_signature"] in card


@pytest.mark.slow  # two training subprocesses (~27 s)
def test_train_script_refuses_to_mix_with_an_earlier_run(corpus, tmp_path):
    out = tmp_path / "run"
    run_train(corpus, out, "--max_steps", "2", "--checkpoint_steps", "2", *QUIET)
    again = run_train(corpus, out, "--max_steps", "2", *QUIET, check=False)
    assert again.returncode != 0 and "--overwrite_output_dir" in again.stderr


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(corpus, tmp_path):
    """1 process x 2 accumulated micro-batches vs 2 processes x 1 micro-batch (gloo): the same
    batches make each update (the sampler deals batch i to rank i % 2, the single process takes
    them in pairs) and the loss is divided by the update's token count in both, so only float32
    summation order could differ (all-reduce vs accumulation). Measured: 0.0 (bitwise equal)
    after 6 updates; the tolerance, 1e-5, leaves room for reduction-order rounding on other
    machines and is far below what a wrong normalisation or another global batch gives (one
    process with half the batch: 0.26)."""
    common = ["--max_steps", "6", "--dropout", "0", "--checkpoint_steps", "6", *QUIET]
    run_train(corpus, tmp_path / "one", "--gradient_accumulation_steps", "2", *common)
    two_processes = run_train(
        corpus, tmp_path / "two", "--gradient_accumulation_steps", "1", *common, processes=2
    )
    # Only the main process reports: one result line, the data counts logged once.
    assert len([line for line in two_processes.stdout.splitlines() if '"steps"' in line]) == 1
    assert two_processes.stderr.count("train: 400 pairs with both sides non-empty") == 1
    run_train(corpus, tmp_path / "half", "--gradient_accumulation_steps", "1", *common)
    one, two, half = (final_weights(tmp_path / n) for n in ("one", "two", "half"))
    same_batch = max_difference(one, two)
    other_batch = max_difference(one, half)
    assert same_batch < 1e-5, same_batch
    assert other_batch > 100 * max(same_batch, 1e-7), (same_batch, other_batch)


@pytest.mark.slow
def test_resume_reaches_the_same_parameters_as_an_uninterrupted_run(corpus, tmp_path):
    """Dropout on, so the restored RNG states matter too. Before resuming, a crash is simulated: a
    half-written `checkpoint_24.tmp` and a `checkpoint_20` without its trainer state are left
    behind; 'latest' must skip both. Single-process CPU training is deterministic, so the
    parameters must be bitwise equal. 30 updates cross an epoch boundary (~25 batches each)."""
    common = ["--dropout", "0.1", "--checkpoint_steps", "8", "--keep_last", "5", *QUIET]
    run_train(corpus, tmp_path / "straight", "--max_steps", "30", *common)
    interrupted = tmp_path / "resumed"
    run_train(corpus, interrupted, "--max_steps", "16", *common)
    junk = interrupted / "checkpoints" / "checkpoint_24.tmp"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"half-written")
    incomplete = interrupted / "checkpoints" / "checkpoint_20"
    shutil.copytree(interrupted / "checkpoints" / "checkpoint_16", incomplete)
    (incomplete / "trainer_state.json").unlink()
    run_train(
        corpus, interrupted, "--max_steps", "30", "--resume_from_checkpoint", "latest", *common
    )
    assert max_difference(final_weights(tmp_path / "straight"), final_weights(interrupted)) == 0.0
    straight_log = [r for r in train_log(tmp_path / "straight") if r["step"] > 16]
    resumed_log = [r for r in train_log(interrupted) if r["step"] > 16][-len(straight_log) :]
    assert [r["train/loss"] for r in resumed_log] == [r["train/loss"] for r in straight_log]


class PoisonedUpdate(TrainingCallback):
    """Test-only fault injection: the gradients of update attempt `attempt` (skipped ones
    counted) become NaN, as a diverging loss would make them."""

    def __init__(self, attempt: int):
        self.attempt = attempt

    def on_backward(self, model, state) -> None:
        if state.step + state.skipped_updates + 1 == self.attempt:
            for parameter in model.parameters():
                if parameter.grad is not None:
                    parameter.grad.fill_(float("nan"))


def test_nan_loss_is_skipped_and_counted_or_stops_with_a_saved_state(corpus, tmp_path):
    from vanilla_transformer.recipe.training import NonFiniteLossError, train

    skipped = tmp_path / "skip"
    summary = train(in_process_config(corpus, skipped, max_steps=4), [PoisonedUpdate(2)])
    assert summary["steps"] == 4 and summary["skipped_updates"] == 1
    assert all(torch.isfinite(t).all() for t in final_weights(skipped).values())

    stopped = tmp_path / "stop"
    config = in_process_config(corpus, stopped, max_steps=4, nan_policy="stop")
    with pytest.raises(NonFiniteLossError, match="non-finite loss at update 2"):
        train(config, [PoisonedUpdate(2)])
    state = json.loads((complete_checkpoints(stopped)[-1] / "trainer_state.json").read_text())
    assert state["step"] == 1 and state["skipped_updates"] == 1


# --------------------------------------------------------------------------------------------------
# Checkpoint atomicity (in process)
# --------------------------------------------------------------------------------------------------


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    save_checkpoint(accelerator, tmp_path, {"step": 1}, keep_last=3)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(accelerator, tmp_path, {"step": 2}, keep_last=3)
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "checkpoint_2.tmp").is_dir()  # the leftover
    latest = resolve_checkpoint(tmp_path, "latest")
    assert latest.name == "checkpoint_1" and complete_checkpoints(tmp_path) == [latest]
    accelerator.load_state(str(latest))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    with pytest.raises(FileNotFoundError, match="not a finished checkpoint"):
        resolve_checkpoint(tmp_path, str(tmp_path / "checkpoints" / "checkpoint_2.tmp"))
    assert not math.isnan(model.weight.sum().item())


# --------------------------------------------------------------------------------------------------
# Refusing what training cannot do well: bad options, empty splits, resume changes, signals
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, accepted",
    [
        ("logging_steps", 0, ">= 1"),
        ("batch_tokens", 0, ">= 1"),
        ("update_tokens", -5, ">= 1"),
        ("label_smoothing", 1.5, r"in \[0, 1\)"),
        ("label_smoothing", 1.0, r"in \[0, 1\)"),
        ("lr_factor", -1.0, "> 0"),
        ("lr_factor", 0.0, "> 0"),
        ("warmup_steps", 0, ">= 1"),
        ("max_steps", 0, ">= 1"),
        ("eval_steps", -1, ">= 0"),
        ("keep_last", -1, ">= 0"),
        ("dropout", 1.0, r"in \[0, 1\)"),
        ("adam_beta2", 1.0, r"in \[0, 1\)"),
        ("average_last", 0, ">= 1"),
        ("eval_num_beams", 0, ">= 1"),
        ("max_train_minutes", float("inf"), "a finite number"),
        ("batch_tokens", "4096", "an integer"),
        ("batch_tokens", True, "an integer"),
    ],
)
def test_every_training_option_is_validated_before_start_naming_option_and_value(
    option, value, accepted
):
    with pytest.raises(ValueError, match=rf"^{option} must be {accepted}, got {value!r}"):
        resolve_config(**{option: value})


def test_a_config_file_with_a_bad_option_is_refused_by_the_cli_before_training(tmp_path, capsys):
    from vanilla_transformer.cli.train import main

    path = tmp_path / "run.yaml"
    path.write_text("logging_steps: 0\n")
    assert main(["--config", str(path), "--output_dir", str(tmp_path / "out")]) != 0
    assert "logging_steps must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def in_process_config(corpus: Path, out: Path, **overrides):
    values = dict(zip(TINY_MODEL[::2], TINY_MODEL[1::2], strict=True))
    flags = {k.removeprefix("--"): v for k, v in values.items()}
    typed = {
        k: (v if k == "log_with" else float(v) if k == "lr_factor" else int(v))
        for k, v in flags.items()
    }
    quiet = dict(eval_steps=0, final_eval_splits="", save_hub=False, average_last=1)
    inputs = dict(dataset=str(corpus / "data"), tokenizer=str(corpus / "tok"), output_dir=str(out))
    return resolve_config(**{**inputs, **typed, **quiet, **overrides})


def test_a_training_split_emptied_by_the_filters_is_refused_saying_what_each_removed(
    corpus, tmp_path
):
    """Every pair is longer than 2 tokens: training used to wait forever for a first batch."""
    from vanilla_transformer.recipe.training import train

    config = in_process_config(corpus, tmp_path / "out", max_source_length=2, max_target_length=2)
    with pytest.raises(ValueError) as caught:
        train(config)
    message = str(caught.value)
    assert "training split" in message and "empty after filtering" in message
    counts = re.search(
        r"400 pairs read; 0 dropped with an empty side, (\d+) with a source longer than "
        r"max_source_length=2 tokens, (\d+) with a target longer than max_target_length=2 tokens "
        r"\((\d+) of the long ones by their length in characters",
        message,
    )
    assert counts, message
    source, target, by_characters = (int(n) for n in counts.groups())
    assert source > 0 and target > 0 and source + target >= 400 and by_characters <= 400


def test_an_empty_validation_split_is_refused_when_training_evaluates_on_it(corpus, tmp_path):
    from vanilla_transformer.recipe.training import train

    data = tmp_path / "data"
    shutil.copytree(corpus / "data", data)
    long_pair = {"translation": {"en": " ".join(["the"] * 60), "es": "el"}}
    (data / "validation.jsonl").write_text(json.dumps(long_pair) + "\n")
    config = in_process_config(corpus, tmp_path / "out", eval_steps=2)
    config.dataset = str(data)
    with pytest.raises(
        ValueError, match=r"validation split .* is empty after filtering .*eval_steps=2"
    ):
        train(config)


@pytest.mark.slow  # four training runs (~55 s)
def test_resume_reloads_the_runs_options_and_refuses_a_change_to_the_data_order(corpus, tmp_path):
    out = tmp_path / "run"
    run_train(corpus, out, "--max_steps", "2", "--checkpoint_steps", "2", *QUIET)
    saved = (out / "training_config.json").read_text()

    changed = run_train(
        corpus, out, "--max_steps", "4", "--seed", "1", *QUIET, "--resume_from_checkpoint",
        "latest", check=False,
    )  # fmt: skip
    assert changed.returncode != 0
    assert "seed: 0 in the run, 1 now" in changed.stderr, changed.stderr[-2000:]
    assert "--override_resume_options" in changed.stderr
    assert (out / "training_config.json").read_text() == saved  # not rewritten

    # Only the run folder and the new step limit: every other option comes from the run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, str(TRAIN_SCRIPT), "--output_dir", str(out)]
    command += ["--resume_from_checkpoint", "latest", "--max_steps", "4", "--checkpoint_steps", "2"]
    resumed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in complete_checkpoints(out)][-1] == "checkpoint_4"
    now = json.loads((out / "training_config.json").read_text())
    assert {k: v for k, v in now.items() if k not in ("max_steps", "resume_from_checkpoint")} == {
        k: v
        for k, v in json.loads(saved).items()
        if k not in ("max_steps", "resume_from_checkpoint")
    }

    overridden = run_train(
        corpus, out, "--max_steps", "6", "--seed", "1", *QUIET, "--resume_from_checkpoint",
        "latest", "--override_resume_options",
    )  # fmt: skip
    assert "changed options" in overridden.stderr
    assert json.loads((out / "training_config.json").read_text())["seed"] == 1


def test_resuming_a_run_that_does_not_exist_is_a_user_error_that_leaves_nothing_behind(
    corpus, tmp_path
):
    from vanilla_transformer.errors import UserError
    from vanilla_transformer.recipe.training import train

    missing = tmp_path / "runs" / "base"
    with pytest.raises(UserError, match="nothing to resume"):
        train(in_process_config(corpus, missing, resume_from_checkpoint="latest"))
    assert not missing.exists() and not (tmp_path / "runs").exists()


def test_a_hand_edited_seed_in_the_runs_options_is_refused_on_resume(corpus, tmp_path):
    from vanilla_transformer.recipe.training import load_run_config, train

    out = tmp_path / "run"
    train(in_process_config(corpus, out, max_steps=2, checkpoint_steps=2))
    options = json.loads((out / "training_config.json").read_text())
    (out / "training_config.json").write_text(json.dumps({**options, "seed": 7}))
    config = resolve_config(
        saved_values=load_run_config(out), resume_from_checkpoint="latest", max_steps=4
    )
    assert config.seed == 7  # the edit is invisible to the options check itself
    with pytest.raises(ValueError, match=r"seed: 0 in the checkpoint, 7 now.*edited by hand"):
        train(config)
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint_2"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_saves_a_checkpoint_at_the_next_update_boundary_and_exits_cleanly(
    corpus, tmp_path, stop
):
    out = tmp_path / "run"
    args = ["--dataset", str(corpus / "data"), "--tokenizer", str(corpus / "tok")]
    args += ["--output_dir", str(out), *TINY_MODEL, "--max_steps", "100000", *QUIET]
    args += ["--checkpoint_steps", "100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, stderr[-3000:]
    assert "Traceback" not in stderr and f"interrupted: {stop.name}" in stderr, stderr[-3000:]
    (checkpoint,) = complete_checkpoints(out)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert checkpoint.name == f"checkpoint_{state['step']}" and state["step"] >= 3
    assert str(checkpoint) in stderr


# ------------------------------------------------------------------------------------------------
# Training faults: SIGKILL during checkpoint saves, disk full, unwritable output directory
# ------------------------------------------------------------------------------------------------
#
# Drives scripts/train.py as a subprocess on an in-test JSONL corpus and the conftest word
# tokenizer. Checkpoints are `output_dir/checkpoints/checkpoint_<step>`, written as
# `checkpoint_<step>.tmp` and renamed once `trainer_state.json` (written last) is in.

CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")


@pytest.fixture
def training_inputs(tmp_path) -> dict[str, Path]:
    """A tiny JSONL corpus and the conftest word tokenizer saved as a folder."""
    from tests.conftest import WORDS

    # conftest's WORDS holds "a" twice, so word_tokenizer() has 44 entries but ids up to 44 (the
    # last word): len(tokenizer) is then too small a vocabulary. Leave that word out.
    words = WORDS[:-1]
    english, spanish = words[: len(words) // 2], words[len(words) // 2 :]
    rows = []
    for i in range(96):
        n = 2 + i % 5
        rows.append(
            (
                " ".join(english[(i + j) % len(english)] for j in range(n)),
                " ".join(spanish[(i + j) % len(spanish)] for j in range(n)),
            )
        )
    corpus = write_jsonl(tmp_path / "train.jsonl", rows)
    tokenizer_dir = tmp_path / "tokenizer"
    word_tokenizer().save_pretrained(tokenizer_dir)
    return {"train_file": corpus, "tokenizer": tokenizer_dir}


def train_command(inputs, output_dir: Path, steps: int, every: int, resume: bool = False):
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        "--dataset",
        str(inputs["train_file"]),
        *"--src_lang en --tgt_lang es --tokenizer".split(),
        str(inputs["tokenizer"]),
        *"--d_model 16 --ffn_dim 32 --attention_heads 2 --encoder_layers 1".split(),
        *"--decoder_layers 1 --max_position_embeddings 32 --batch_tokens 200".split(),
        *"--max_steps".split(),
        str(steps),
        "--checkpoint_steps",
        str(every),
        *"--keep_last 100 --eval_steps 0 --average_last 1 --no_save_hub".split(),
        *"--final_eval_splits".split(),
        "",
        *"--threads 1 --log_with none --seed 0 --output_dir".split(),
        str(output_dir),
    ]
    if resume:
        command += ["--resume_from_checkpoint", "latest"]
    return command


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """Folders with a final checkpoint name (temporary `.tmp` folders excluded), oldest first."""
    parent = output_dir / "checkpoints"
    if not parent.is_dir():
        return []
    found = [(int(m.group(1)), c) for c in parent.iterdir() if (m := CHECKPOINT_NAME.match(c.name))]
    return [path for _, path in sorted(found)]


def assert_checkpoint_loads(folder: Path) -> None:
    """Its trainer state is in (written last) and every weights file is whole."""
    state = json.loads((folder / STATE_FILE).read_text())
    assert state["step"] == int(CHECKPOINT_NAME.match(folder.name).group(1))
    weights = sorted(folder.rglob("*.safetensors"))
    assert weights, f"{folder} holds no safetensors weights: {sorted(os.listdir(folder))}"
    for path in weights:
        check_safetensors_file(path)
        load_file(path)


@pytest.mark.slow
def test_training_killed_during_checkpoint_saves_always_resumes_from_a_whole_checkpoint(
    training_inputs, tmp_path
):
    """SIGKILL three times (twice as a save's temporary folder appears, once at a random
    moment): after each kill every checkpoint folder with a final name loads, and resuming from
    the latest one runs to the end."""
    out = tmp_path / "out"
    steps, every = 12, 2
    rng = random.Random(0)
    resume = False
    saves_hit = 0
    for attempt in ("on-save", "random", "on-save"):
        process = subprocess.Popen(
            train_command(training_inputs, out, steps, every, resume),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + (rng.uniform(4, 12) if attempt == "random" else 120)
        while process.poll() is None and time.monotonic() < deadline:
            ckpts = out / "checkpoints"
            if attempt == "on-save" and ckpts.is_dir():
                if any(name.endswith(".tmp") for name in os.listdir(ckpts)):
                    saves_hit += 1
                    break  # a save is under way
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        for checkpoint in checkpoint_folders(out):
            assert_checkpoint_loads(checkpoint)
        resume = bool(checkpoint_folders(out))
    assert saves_hit >= 1, "no kill landed during a save"
    final = subprocess.run(
        train_command(training_inputs, out, steps, every, resume),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    checkpoints = checkpoint_folders(out)
    assert checkpoints[-1].name == f"checkpoint_{steps}"
    for checkpoint in checkpoints:
        assert_checkpoint_loads(checkpoint)


DISK_FULL_SHIM = """
import errno, runpy, sys
import safetensors.torch, torch
calls, limit = {"n": 0}, int(sys.argv[1])
def full(original):
    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)
    return save
safetensors.torch.save_file = full(safetensors.torch.save_file)
torch.save = full(torch.save)
script = sys.argv[2]
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_a_clear_error_and_the_previous_checkpoint_survives(
    training_inputs, tmp_path
):
    """safetensors/torch saves start failing with ENOSPC after the first checkpoint's files: the
    run stops with an error that says so, and the first checkpoint still loads."""
    out = tmp_path / "out"
    command = train_command(training_inputs, out, steps=6, every=2)
    # Four writes make one checkpoint: model (safetensors), optimizer, scheduler, RNG states.
    shim = [sys.executable, "-c", DISK_FULL_SHIM, "4", *command[1:]]
    result = subprocess.run(shim, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    assert "No space left on device" in result.stderr, result.stderr[-3000:]
    checkpoints = checkpoint_folders(out)
    assert [c.name for c in checkpoints] == ["checkpoint_2"], result.stderr[-3000:]
    for checkpoint in checkpoints:
        assert_checkpoint_loads(checkpoint)


@pytest.mark.slow
def test_an_unwritable_output_directory_fails_fast_naming_it(training_inputs, tmp_path):
    """Root ignores permission bits, so the output directory lies under a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / "out"
    result = subprocess.run(
        train_command(training_inputs, out, steps=4, every=2),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode != 0
    assert str(blocker) in result.stderr, result.stderr[-3000:]


def test_resume_refuses_another_number_of_processes_or_a_changed_tokenizer(corpus, tmp_path):
    from vanilla_transformer.recipe.checkpoints import write_manifest
    from vanilla_transformer.recipe.training import train

    tokenizer = tmp_path / "tok"
    shutil.copytree(corpus / "tok", tokenizer)
    out = tmp_path / "run"
    run_train(corpus, out, "--tokenizer", str(tokenizer), "--max_steps", "2", *QUIET)
    config = in_process_config(
        corpus, out, tokenizer=str(tokenizer), max_steps=2, resume_from_checkpoint="latest"
    )
    (checkpoint,) = complete_checkpoints(out)
    state_file = checkpoint / "trainer_state.json"
    original = state_file.read_text()

    state = json.loads(original)
    state["num_processes"] = 2  # as if saved by a 2-process run
    state_file.write_text(json.dumps(state))
    write_manifest(checkpoint)
    with pytest.raises(ValueError, match=r"num_processes: 2 in the run, 1 now"):
        train(config)

    state_file.write_text(original)
    write_manifest(checkpoint)
    texts = [r["translation"][k] for r in _pairs(50, random.Random(1)) for k in ("en", "es")]
    train_tokenizer(texts, vocab_size=280, model_max_length=64).save_pretrained(tokenizer)
    with pytest.raises(ValueError, match=r"tokenizer\.json changed since the run saved it"):
        train(config)


def test_a_checkpoint_without_a_tokenizer_hash_is_refused_with_the_message_not_a_type_error():
    """A trainer state whose tokenizer_sha256 is null (hand-edited, or written by another tool)
    gets the resume refusal naming both hashes, not a formatting error."""
    from types import SimpleNamespace

    from vanilla_transformer.recipe.loop import TrainState
    from vanilla_transformer.recipe.training import check_same_run

    config = SimpleNamespace(override_resume_options=False, tokenizer="tok")
    now = TrainState(tokenizer_sha256="0123456789abcdef")
    saved = {"num_processes": 1, "tokenizer_sha256": None}
    with pytest.raises(ValueError, match=r"sha256 None\.\.\. in the run, 0123456789ab\.\.\. now"):
        check_same_run(config, saved, now, Path("run/checkpoint_2"))


# --------------------------------------------------------------------------------------------------
# The final model: the checkpoint average only when it is not worse (issue 19.2)
# --------------------------------------------------------------------------------------------------


def test_warm_up_checkpoints_are_not_averaged_and_both_scores_are_recorded(corpus, tmp_path):
    from vanilla_transformer.recipe.training import train

    config = in_process_config(
        corpus, tmp_path / "run", max_steps=6, checkpoint_steps=1, keep_last=5, average_last=5,
        warmup_steps=4, eval_bleu_samples=4, eval_num_beams=1,
    )  # fmt: skip
    summary = train(config)
    check = summary["averaging_check"]
    assert check["left_out_in_warmup"] == ["checkpoint_2", "checkpoint_3"]
    assert check["averaged"] == ["checkpoint_4", "checkpoint_5", "checkpoint_6"]
    for scores in (check["newest_scores"], check["average_scores"]):
        assert set(scores) == {"bleu", "chrf", "num_samples"} and scores["num_samples"] == 4
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["averaging_check"] == check


def test_an_average_that_scores_below_the_newest_checkpoint_is_not_the_final_model(tmp_path):
    from tests.conftest import tiny_config
    from tests.toy_translation import toy_pairs, trained_toy_model
    from vanilla_transformer import VanillaTransformerForConditionalGeneration
    from vanilla_transformer.recipe.checkpoints import average_unless_worse
    from vanilla_transformer.recipe.evaluation import evaluate_translation

    trained, tokenizer = trained_toy_model(), word_tokenizer()
    torch.manual_seed(1)
    VanillaTransformerForConditionalGeneration(tiny_config()).save_pretrained(tmp_path / "step_1")
    trained.save_pretrained(tmp_path / "step_2")
    pairs = [{"translation": {"en": s, "es": t}} for s, t in toy_pairs(16, seed=5)]

    def score(model):
        return evaluate_translation(model, tokenizer, pairs, "en", "es", num_beams=1)

    model = VanillaTransformerForConditionalGeneration(tiny_config())
    model.load_state_dict(trained.state_dict())
    worse = average_unless_worse(model, [tmp_path / "step_1", tmp_path / "step_2"], score)
    assert worse["kept"] == "newest"
    assert worse["average_scores"]["chrf"] < worse["newest_scores"]["chrf"]
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    # An average that is not worse (here: of two equal checkpoints) is kept.
    same = average_unless_worse(model, [tmp_path / "step_2", tmp_path / "step_2"], score)
    assert same["kept"] == "average" and same["average_scores"] == same["newest_scores"]
