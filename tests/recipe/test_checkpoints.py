"""Specification of `vanilla_transformer.recipe.checkpoints` and
`scripts/average_checkpoints.py`."""

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from tests.conftest import (
    run_script,
    tiny_config,
    truncate,
)
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.recipe.checkpoints import (
    average_checkpoints,
    average_state_dicts,
    list_checkpoints,
    load_averaged_weights,
)
from vanilla_transformer.recipe.tokenization import train_tokenizer


def tiny_model(seed: int, vocab_size: int = 40, d_model: int = 32):
    torch.manual_seed(seed)
    return VanillaTransformerForConditionalGeneration(
        tiny_config(vocab_size=vocab_size, d_model=d_model)
    )


def test_average_is_the_exact_mean_accumulated_in_float64():
    # In float32, 1e8 + 1 == 1e8: a float32 running sum would give 0 here, not 1/3.
    dicts = [
        {"w": torch.tensor([1e8, 1.0])},
        {"w": torch.tensor([1.0, 2.0])},
        {"w": torch.tensor([-1e8, 4.0])},
    ]
    out = average_state_dicts(dicts)
    assert out["w"].dtype == torch.float32
    assert torch.equal(out["w"], torch.tensor([1 / 3, 7 / 3], dtype=torch.float32))


def test_average_keeps_each_dtype_and_takes_integers_from_the_last():
    dicts = [
        {"h": torch.tensor([1.0, 2.0], dtype=torch.bfloat16), "step": torch.tensor(10)},
        {"h": torch.tensor([2.0, 4.0], dtype=torch.bfloat16), "step": torch.tensor(20)},
    ]
    out = average_state_dicts(dicts)
    assert out["h"].dtype == torch.bfloat16
    assert torch.equal(out["h"], torch.tensor([1.5, 3.0], dtype=torch.bfloat16))
    assert out["step"].item() == 20


def test_mismatched_keys_raise_naming_the_checkpoint_and_the_key():
    a = {"x": torch.zeros(2), "y": torch.zeros(2)}
    b = {"x": torch.zeros(2), "z": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"ckpt_b.*missing \['y'\].*unexpected \['z'\]"):
        average_state_dicts([a, b], names=["ckpt_a", "ckpt_b"])


def test_mismatched_shapes_raise_naming_the_checkpoint_and_the_key():
    with pytest.raises(ValueError, match=r"ckpt_b: key 'x' has shape \(3,\)"):
        average_state_dicts([{"x": torch.zeros(2)}, {"x": torch.zeros(3)}], ["ckpt_a", "ckpt_b"])


def test_tied_weights_are_averaged_once_and_stay_one_tensor():
    dicts = [tiny_model(seed).state_dict() for seed in (0, 1)]
    out = average_state_dicts(dicts)
    assert out["lm_head.weight"] is out["model.shared.weight"]
    expected = (dicts[0]["model.shared.weight"] + dicts[1]["model.shared.weight"]) / 2
    torch.testing.assert_close(out["model.shared.weight"], expected, rtol=0, atol=1e-7)


def test_save_pretrained_and_accelerate_checkpoints_average_to_the_mean(tmp_path):
    models = [tiny_model(seed) for seed in (0, 1, 2)]
    models[0].save_pretrained(tmp_path / "checkpoint_1")
    models[1].save_pretrained(tmp_path / "checkpoint_2")
    accelerator = Accelerator(cpu=True)
    prepared = accelerator.prepare(models[2])
    accelerator.save_state(tmp_path / "checkpoint_3")
    del prepared

    folders = [tmp_path / f"checkpoint_{i}" for i in (1, 2, 3)]
    averaged = average_checkpoints(folders)
    assert "lm_head.weight" not in averaged  # tied weights stored once
    for key, value in averaged.items():
        mean = sum(m.state_dict()[key].double() for m in models) / 3
        torch.testing.assert_close(value, mean.float(), rtol=0, atol=1e-7)

    target = tiny_model(seed=9)
    load_averaged_weights(target, averaged)
    assert target.lm_head.weight.data_ptr() == target.model.shared.weight.data_ptr()
    torch.testing.assert_close(target.lm_head.weight, averaged["model.shared.weight"])


def test_checkpoints_of_another_model_raise_naming_the_file_and_key(tmp_path):
    tiny_model(0).save_pretrained(tmp_path / "a")
    tiny_model(0, vocab_size=41).save_pretrained(tmp_path / "b")
    with pytest.raises(ValueError) as error:
        average_checkpoints([tmp_path / "a", tmp_path / "b"])
    message = str(error.value)
    assert str(tmp_path / "b" / "model.safetensors") in message
    assert "'model.shared.weight' has shape (41, 32)" in message


def test_a_folder_without_weights_raises_file_not_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        average_checkpoints([tmp_path / "empty"])


def test_wrapper_prefixes_are_stripped(tmp_path):
    state = {
        k: v.clone()
        for k, v in tiny_model(0).state_dict().items()
        if k
        not in (
            "lm_head.weight",
            "model.encoder.embed_tokens.weight",
            "model.decoder.embed_tokens.weight",
        )
    }
    (tmp_path / "ddp").mkdir()
    save_file({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp" / "model.safetensors")
    assert set(average_checkpoints([tmp_path / "ddp"])) == set(state)


def test_loading_rejects_a_missing_weight_that_is_not_tied():
    averaged = dict(tiny_model(0).state_dict())
    key = next(k for k in averaged if k.endswith("fc1.weight"))
    del averaged[key]
    with pytest.raises(ValueError, match=key):
        load_averaged_weights(tiny_model(1), averaged)


def test_list_checkpoints_orders_by_step_number(tmp_path):
    for name in ("checkpoint_10", "checkpoint_2", "checkpoints/checkpoint_1", "logs", "final"):
        (tmp_path / name).mkdir(parents=True)
        if name not in ("logs",):
            (tmp_path / name / "model.safetensors").touch()
    found = [p.name for p in list_checkpoints(tmp_path)]
    assert found == ["checkpoint_1", "checkpoint_2", "checkpoint_10"]


def test_average_script_averages_the_last_k_and_reports_bleu_before_and_after(tmp_path):
    tokenizer = train_tokenizer(
        ["the house is red", "la casa es roja"] * 3, vocab_size=270, min_frequency=1
    )
    run = tmp_path / "run"
    models = [tiny_model(seed, vocab_size=len(tokenizer)) for seed in (0, 1, 2)]
    for step, model in zip((100, 200, 300), models, strict=True):
        model.save_pretrained(run / f"checkpoint-{step}")
        tokenizer.save_pretrained(run / f"checkpoint-{step}")
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"translation": {"en": "the house is red", "es": "la casa es roja"}}] * 3
    (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "avg"
    proc = run_script(
        "average_checkpoints.py",
        "--run_dir",
        str(run),
        "--last",
        "2",
        "--output_dir",
        str(out),
        "--eval_split",
        "validation",
        "--dataset",
        str(data),
        *"--num_beams 1 --max_samples 2".split(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "newest checkpoint  BLEU" in proc.stdout and "average of 2" in proc.stdout
    record = json.loads((out / "averaging.json").read_text())
    assert [Path(c).name for c in record["checkpoints"]] == ["checkpoint-200", "checkpoint-300"]
    assert {"bleu", "chrf"} <= set(record["averaged_scores"])
    saved = load_file(out / "model.safetensors")
    for key, value in saved.items():
        mean = (models[1].state_dict()[key].double() + models[2].state_dict()[key].double()) / 2
        torch.testing.assert_close(value, mean.float(), rtol=0, atol=1e-7)
    assert (out / "tokenizer.json").is_file()
    assert (out / "modeling_vanilla_transformer.py").is_file()


# ------------------------------------------------------------------------------------------------
# Checkpoint folders of a run: half-written ones are never picked up
# ------------------------------------------------------------------------------------------------


def test_list_checkpoints_ignores_temporary_folders_of_an_interrupted_save(tmp_path):
    from vanilla_transformer.recipe.checkpoints import list_checkpoints

    model = tiny_model(seed=0)
    for name in ("checkpoint-1", "checkpoint-2", "checkpoint-3.tmp"):
        model.save_pretrained(tmp_path / name)
    truncate(tmp_path / "checkpoint-3.tmp" / "model.safetensors")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]


def test_averaging_again_replaces_the_earlier_average_only_when_asked(tmp_path):
    from vanilla_transformer.cli.average import main

    tokenizer = train_tokenizer(["the house is red"] * 3, vocab_size=270, min_frequency=1)
    run = tmp_path / "run"
    for step, seed in ((100, 0), (200, 1)):
        tiny_model(seed, vocab_size=len(tokenizer)).save_pretrained(run / f"checkpoint-{step}")
        tokenizer.save_pretrained(run / f"checkpoint-{step}")
    inputs = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    out = tmp_path / "avg"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier average")
    args = ["--run_dir", str(run), "--last", "2", "--output_dir", str(out)]
    assert main(args) != 0 and (out / "stale.txt").is_file()
    assert main([*args[:-2], "--output_dir", str(run / "checkpoint-200")]) != 0
    assert main([*args, "--overwrite_output_dir"]) == 0
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == inputs
