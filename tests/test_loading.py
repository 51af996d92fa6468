"""`vanilla_transformer.loading`: a checkpoint loads completely and exactly or not at
all; saved folders hold no pickles and no risky remote code."""

import ast
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSeq2SeqLM

from tests.conftest import (
    REMOTE_CODE,
    edit_config,
    same_weights,
    tiny_model,
    truncate,
)
from vanilla_transformer.loading import (
    PICKLE_SUFFIXES,
    CheckpointError,
    load_pretrained_strict,
    load_tokenizer,
)

# ------------------------------------------------------------------------------------------------
# Checkpoint loading: complete and exact, or an error naming the file or key
# ------------------------------------------------------------------------------------------------


def test_the_strict_loader_returns_the_saved_model_exactly(saved):
    torch.manual_seed(0)
    reference = tiny_model()  # built exactly as the `saved` fixture built its model
    loaded = load_pretrained_strict(saved)
    assert same_weights(loaded, reference)
    assert loaded.lm_head.weight is loaded.model.shared.weight


def test_the_strict_loader_reads_a_sharded_checkpoint(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 2
    assert same_weights(load_pretrained_strict(tmp_path), model)


def corrupt_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json !!!"  # the JSON header starts after the 8-byte length
    path.write_bytes(bytes(data))


def huge_header_length(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    path.write_bytes(bytes(data))


def one_byte_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "harm", [truncate, corrupt_header, huge_header_length, one_byte_short, empty]
)
def test_a_damaged_safetensors_file_fails_to_load_and_the_strict_loader_names_it(fresh_copy, harm):
    folder = fresh_copy()
    harm(folder / "model.safetensors")
    with pytest.raises(SafetensorError):  # transformers: raises, without the file's name
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors"):
        load_pretrained_strict(folder)


@pytest.fixture
def sharded(tmp_path) -> Path:
    folder = tmp_path / "sharded"
    tiny_model().save_pretrained(folder, max_shard_size="20KB")
    return folder


def test_a_missing_shard_fails_to_load_naming_the_shard(sharded):
    shard = sorted(sharded.glob("model-*-of-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        AutoModelForSeq2SeqLM.from_pretrained(sharded)
    with pytest.raises(CheckpointError, match=f"missing from .*{shard.name}"):
        load_pretrained_strict(sharded)


def test_a_truncated_shard_fails_to_load_naming_the_shard(sharded):
    shard = sorted(sharded.glob("model-*-of-*.safetensors"))[-1]
    truncate(shard, 0.9)
    with pytest.raises(SafetensorError):
        AutoModelForSeq2SeqLM.from_pretrained(sharded)
    with pytest.raises(CheckpointError, match=shard.name):
        load_pretrained_strict(sharded)


def test_a_config_json_whose_d_model_disagrees_with_the_weights_names_the_keys(fresh_copy):
    folder = fresh_copy()
    edit_config(folder, d_model=64)
    # transformers raises, but its message only says "look at the above report" (the log).
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(
        CheckpointError, match=r"of another shape: .*\(checkpoint \(\d+, 32\), model \(\d+, 64\)\)"
    ):
        load_pretrained_strict(folder)


def test_extra_layers_in_config_json_are_random_with_from_pretrained_but_refused_strictly(
    fresh_copy,
):
    """The silent wrong result: transformers initialises the missing layer randomly and returns
    the model after a logged report. Strict loading refuses, naming the missing keys."""
    folder = fresh_copy()
    edit_config(folder, encoder_layers=3)
    model, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
    assert len(model.model.encoder.layers) == 3
    assert any(k.startswith("model.encoder.layers.2.") for k in info["missing_keys"])
    with pytest.raises(
        CheckpointError, match=r"missing from the checkpoint: model\.encoder\.layers\.2"
    ):
        load_pretrained_strict(folder)


def test_fewer_layers_in_config_json_drop_weights_with_from_pretrained_but_are_refused(fresh_copy):
    folder = fresh_copy()
    edit_config(folder, decoder_layers=1)
    _, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
    assert any(k.startswith("model.decoder.layers.1.") for k in info["unexpected_keys"])
    with pytest.raises(CheckpointError, match=r"not in the model: model\.decoder\.layers\.1"):
        load_pretrained_strict(folder)


def test_untying_embeddings_in_config_json_is_refused(fresh_copy):
    """A tied checkpoint stores one matrix: loading it untied would leave lm_head random."""
    folder = fresh_copy()
    edit_config(folder, tie_word_embeddings=False)
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        load_pretrained_strict(folder)


def test_a_folder_without_weights_names_what_it_looked_for(fresh_copy):
    folder = fresh_copy()
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        load_pretrained_strict(folder)


def test_the_strict_loader_refuses_pickled_weights(fresh_copy):
    """transformers still loads a folder holding only pytorch_model.bin (torch.load, a pickle);
    the strict loader never unpickles."""
    folder = fresh_copy()
    weights = load_file(folder / "model.safetensors")
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert AutoModelForSeq2SeqLM.from_pretrained(folder) is not None
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model\.bin\)"):
        load_pretrained_strict(folder)


def test_the_strict_loader_names_a_path_that_is_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_pretrained_strict(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        load_pretrained_strict(tmp_path)


# ------------------------------------------------------------------------------------------------
# Security: weights only as safetensors; the remote code saved beside them is inert
# ------------------------------------------------------------------------------------------------


def test_a_saved_folder_holds_no_pickles(tmp_path, tokenizer):
    tiny_model().save_pretrained(tmp_path / "single")
    tiny_model().save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    tokenizer.save_pretrained(tmp_path / "single")
    for path in tmp_path.rglob("*"):
        assert path.suffix not in PICKLE_SUFFIXES, path
        if path.suffix == ".safetensors":
            # An 8-byte little-endian header length, then a JSON object.
            assert path.read_bytes()[8:9] == b"{", path
        elif path.is_file():
            path.read_text(encoding="utf-8")  # everything else is text (JSON, Python)


STDLIB_ALLOWED = {"__future__", "math", "collections", "typing", "dataclasses", "functools"}
THIRD_PARTY_ALLOWED = {"torch", "transformers"}
# The config validates with transformers' own mechanism, huggingface_hub's `@strict` (pure
# Python: type checks and `validate_*` hooks), and converts its error.
MODULES_ALLOWED = {"huggingface_hub.dataclasses", "huggingface_hub.errors"}
FORBIDDEN_NAMES = {
    "environ",
    "getenv",
    "putenv",
    "eval",
    "exec",
    "compile",
    "__import__",
    "open",
    "system",
    "popen",
    "urlopen",
    "import_module",
    "load_dynamic",
}


def remote_code_findings(source: str) -> list[str]:
    """Imports outside torch/transformers/huggingface_hub's strict dataclasses/a few pure stdlib
    modules/siblings, and any use of environment variables, process, network, file or
    dynamic-code functions."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from .configuration_x import X`: a sibling file, checked itself
                sibling = f"{node.module}.py"
                if sibling not in REMOTE_CODE:
                    found.append(f"relative import of {node.module}")
                continue
            modules = [node.module]
        else:
            name = getattr(node, "id", None) or getattr(node, "attr", None)
            if name in FORBIDDEN_NAMES:
                found.append(f"line {node.lineno}: {name}")
            continue
        for module in modules:
            top = module.split(".")[0]
            if top not in STDLIB_ALLOWED | THIRD_PARTY_ALLOWED and module not in MODULES_ALLOWED:
                found.append(f"line {node.lineno}: import {module}")
    return found


def test_the_remote_code_saved_beside_a_model_imports_nothing_risky(saved):
    """The files `trust_remote_code=True` executes import only torch, transformers, pure stdlib
    modules and each other, and touch no environment variable, process, socket, URL or file."""
    for name in REMOTE_CODE:
        path = saved / name
        assert path.is_file(), f"{name} not saved beside the weights"
        findings = remote_code_findings(path.read_text(encoding="utf-8"))
        assert not findings, f"{name}: {findings}"
    assert not [p.name for p in saved.glob("*.py") if p.name not in REMOTE_CODE]


def test_the_remote_code_check_catches_what_it_looks_for():
    bad = (
        "import os\nimport subprocess\nfrom urllib.request import urlopen\nimport requests\n"
        "import socket\nx = os.environ['HOME']\ny = os.getenv('X')\neval('1')\nexec('2')\n"
        "from .evil import z\n"
    )
    findings = " ".join(remote_code_findings(bad))
    for word in (
        "os",
        "subprocess",
        "urllib",
        "requests",
        "socket",
        "environ",
        "getenv",
        "eval",
        "exec",
        "evil",
    ):
        assert word in findings, word
    assert sys.stdlib_module_names >= STDLIB_ALLOWED


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_the_strict_loader_refuses_non_finite_weights_naming_the_tensor(fresh_copy, bad):
    """Such a model loads with from_pretrained and generate() returns an empty translation."""
    folder = fresh_copy()
    weights = load_file(folder / "model.safetensors")
    name = "model.decoder.layers.0.encoder_attn.v_proj.weight"
    weights[name][0, 0] = bad
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"non-finite weights in {re.escape(name)} \("):
        load_pretrained_strict(folder)


def test_a_model_folder_without_tokenizer_files_is_named_with_what_was_looked_for(tmp_path):
    from vanilla_transformer import translation_pipeline

    tiny_model().save_pretrained(tmp_path / "model")
    with pytest.raises(
        CheckpointError, match=r"model holds no tokenizer \(none of tokenizer\.json"
    ):
        load_tokenizer(tmp_path / "model")
    with pytest.raises(CheckpointError, match="holds no tokenizer"):
        translation_pipeline(str(tmp_path / "model"))
