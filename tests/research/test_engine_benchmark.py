"""The engines benchmark (`scripts/benchmark.py --parts engines`) on the toy model and a few lines:
every path in every setting, ratios against torch plain from the same run, BLEU of each path's own
outputs. Correctness only: no timing is asserted."""

import importlib.util

import pytest
from toy_translation import save_toy_model, toy_pairs

from research import benchmarking as bm

MISSING = [
    m for m in ("ctranslate2", "onnxruntime", "onnxscript") if not importlib.util.find_spec(m)
]
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} not installed"),
    pytest.mark.slow,  # one module fixture exports and times every engine (~70 s)
]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    save_toy_model(root / "model")
    pairs = toy_pairs(6, seed=3)
    notes = []
    # The fast int8 path compiles for minutes per shape: its selection is tested on its own below.
    paths = bm.engine_paths(str(root / "model"), str(root / "cache"), 1, notes, fast_int8=False)
    rows = bm.bench_engines(paths, [s for s, _ in pairs], [t for _, t in pairs], max_tokens=64)
    return paths, rows, notes, root


def test_every_engine_path_is_measured_in_greedy_and_beam_4(result):
    paths, rows, notes, _ = result
    expected = {
        "torch plain fp32", "CTranslate2 fp32", "CTranslate2 int8", "ONNX Runtime fp32",
        "ONNX Runtime int8", "MarianMTModel fp32", "CTranslate2 fp32, direct translate_batch",
        "CTranslate2 int8, direct translate_batch",
    }  # fmt: skip
    assert "torch fast int8: left out (fast_int8=False)" in notes
    assert set(paths) == expected
    assert {(r["setting"], r["path"]) for r in rows} == {
        (setting, path) for setting, _ in bm.ENGINE_SETTINGS for path in expected
    }
    for row in rows:
        assert row["sentences_per_s"] > 0 and 0 <= row["bleu"] <= 100


def test_ratios_and_bleu_differences_are_against_torch_plain_of_the_same_run(result):
    _, rows, _, _ = result
    for setting, _ in bm.ENGINE_SETTINGS:
        by = {r["path"]: r for r in rows if r["setting"] == setting}
        plain = by["torch plain fp32"]
        assert plain["vs_torch_plain"] == 1.0 and plain["bleu_vs_torch_plain"] == 0.0
        for row in by.values():
            assert row["vs_torch_plain"] == pytest.approx(plain["seconds"] / row["seconds"])
        # Same weights, same decoding: the float32 engines' translations are torch's.
        for name in (
            "CTranslate2 fp32",
            "CTranslate2 fp32, direct translate_batch",
            "ONNX Runtime fp32",
        ):
            assert by[name]["bleu"] == plain["bleu"], name


def test_the_table_names_the_cpu_every_path_and_the_direct_ctranslate2_ratios(result):
    _, rows, _, _ = result
    machine = {"cpu_model": "Test CPU", "cpu_flags": "AVX2 yes"}
    info = {"rows": rows, "data": "toy", "lines": 6, "model": "toy", "max_tokens": 64, "threads": 1}
    table = bm.format_engines(info, machine)
    assert "Test CPU" in table and "AVX2 yes" in table
    for row in rows:
        assert f"| {row['setting']} | {row['path']} |" in table
    assert "direct translate_batch on the same batches" in table and "beam 4 int8" in table


def test_the_fast_int8_path_is_measured_only_where_the_cpu_accepts_it(result, monkeypatch):
    import vanilla_transformer.inference

    *_, root = result
    monkeypatch.setattr(vanilla_transformer.inference, "cpu_has_fast_int8", lambda: False)
    notes = []
    paths = bm.engine_paths(str(root / "model"), str(root / "cache"), 1, notes)
    assert "torch fast int8" not in paths
    assert any("torch fast int8: refused on this CPU" in note for note in notes)
