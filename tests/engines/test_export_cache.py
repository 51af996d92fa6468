"""The export cache: a model is exported on first use, reused while its files are unchanged,
exported again when they change, and never left half-written."""

import importlib.util
import shutil

import pytest
import torch
from toy_translation import save_toy_model, trained_toy_model

from vanilla_transformer.engines import cache, load_translator

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None, reason="ctranslate2 is not installed"
)


@pytest.fixture
def model_folder(tmp_path):
    return save_toy_model(tmp_path / "model")


@pytest.fixture
def exports(monkeypatch):
    """The CTranslate2 exports made (their quantizations), counted by wrapping the exporter."""
    from vanilla_transformer.export import ctranslate2 as exporter

    made, export = [], exporter.export_ctranslate2

    def counting(model, tokenizer, output_dir, quantization="float32"):
        made.append(quantization)
        return export(model, tokenizer, output_dir, quantization)

    monkeypatch.setattr(exporter, "export_ctranslate2", counting)
    return made


def test_an_unchanged_model_is_exported_once(model_folder, tmp_path, exports):
    first = load_translator(model_folder, "ctranslate2", cache_dir=tmp_path / "cache")
    second = load_translator(model_folder, "ctranslate2", cache_dir=tmp_path / "cache")
    assert exports == ["float32"]
    assert first.folder == second.folder
    # A copy of the same files elsewhere has the same content: the same export.
    shutil.copytree(model_folder, tmp_path / "copy")
    assert (
        load_translator(tmp_path / "copy", "ctranslate2", cache_dir=tmp_path / "cache").folder
        == first.folder
    )
    assert exports == ["float32"]


def test_changed_weights_config_or_quantization_are_exported_again(model_folder, tmp_path, exports):
    folders = {load_translator(model_folder, "ctranslate2", cache_dir=tmp_path).folder}
    model = trained_toy_model()
    changed = type(model)(model.config)
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.lm_head.weight[0, 0] += 1.0  # one weight
    changed.save_pretrained(model_folder)
    folders.add(load_translator(model_folder, "ctranslate2", cache_dir=tmp_path).folder)
    config = (model_folder / "generation_config.json").read_text()
    (model_folder / "generation_config.json").write_text(config.replace("0.6", "0.7"))
    folders.add(load_translator(model_folder, "ctranslate2", cache_dir=tmp_path).folder)
    folders.add(load_translator(model_folder, "ctranslate2", "int8", cache_dir=tmp_path).folder)
    assert exports == ["float32", "float32", "float32", "int8"]
    assert len(folders) == 4


def test_a_failed_export_leaves_nothing_in_the_cache(model_folder, tmp_path):
    def failing(target):
        (target / "model.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cache.cached_export(
            model_folder, "ctranslate2", "float32", "ctranslate2", failing, tmp_path / "cache"
        )
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_export_finished_by_another_process_meanwhile_is_used(model_folder, tmp_path):
    """Two processes exporting at once: the second rename fails on the first's folder, which is
    complete (renamed in one step), and is returned."""
    key = cache.content_key(model_folder, "ctranslate2", "float32", "ctranslate2")
    finished = tmp_path / "cache" / f"ctranslate2-float32-{key}"

    def racing(target):
        (target / "model.bin").write_bytes(b"mine")
        finished.mkdir()
        (finished / "model.bin").write_bytes(b"theirs")

    folder = cache.cached_export(
        model_folder, "ctranslate2", "float32", "ctranslate2", racing, tmp_path / "cache"
    )
    assert folder == finished and (folder / "model.bin").read_bytes() == b"theirs"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [finished.name]
