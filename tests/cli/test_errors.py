"""One error style for every tool: a user error (missing or wrong folder, bad config, nothing to
resume, an input about to be overwritten) is one or two lines on stderr naming what was wrong and
what to do, with a non-zero exit and no traceback; `--debug` shows the traceback instead.

The tools run in process (their `main(argv)` is what the console scripts call), so each case takes
well under a second; the table in docs/reliability.md lists the same cases."""

import json
from pathlib import Path

import pytest

from vanilla_transformer.errors import UserError


def _model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def _run_with_checkpoints(root: Path) -> Path:
    run = root / "run"
    for step in (2, 4):
        folder = _model_folder(run / "checkpoints" / f"checkpoint_{step}")
        (folder / "model.safetensors").write_bytes(b"")  # never read: refused before loading
    (run / "training_config.json").write_text(json.dumps({"output_dir": "run"}))
    return run


def _case_evaluate_missing_checkpoint(tmp):
    run = _run_with_checkpoints(tmp)
    return "evaluate", [str(run / "checkpoints" / "checkpoint_9")], ["checkpoint_9", "checkpoint_4"]


def _case_evaluate_a_file(tmp):
    (tmp / "model.txt").write_text("not a model")
    return "evaluate", [str(tmp / "model.txt")], ["is a file"]


def _case_evaluate_an_empty_folder(tmp):
    (tmp / "empty").mkdir()
    return "evaluate", [str(tmp / "empty")], ["holds no model"]


def _case_export_a_path_that_is_no_folder_nor_hub_id(tmp):
    return "export", ["./nope/x", str(tmp / "out"), "--format", "onnx"], ["./nope/x does not exist"]


def _train_with_config(tmp, text: str | None, expected: list[str]):
    """The train tool given `--config my.yaml` holding `text` (None: no such file)."""
    if text is not None:
        (tmp / "my.yaml").write_text(text)
    return "train", ["--config", str(tmp / "my.yaml"), "--output_dir", str(tmp / "out")], expected


def _case_train_missing_config(tmp):
    return _train_with_config(tmp, None, ["my.yaml", "no such file"])


def _case_train_unreadable_config(tmp):
    return _train_with_config(tmp, "lr_factor: [1, 2\n", ["my.yaml", "not a valid"])


def _case_train_bad_config_value(tmp):
    return _train_with_config(tmp, "logging_steps: 0\n", ["logging_steps must be >= 1", "my.yaml"])


def _case_train_resume_nothing(tmp):
    args = ["--output_dir", str(tmp / "out"), "--resume_from_checkpoint", "latest"]
    return "train", args, ["nothing to resume", "--output_dir"]


def _case_average_into_an_input(tmp):
    run = _run_with_checkpoints(tmp)
    ckpts = [str(p) for p in sorted((run / "checkpoints").iterdir())]
    return "average", [*ckpts, "--output_dir", ckpts[0]], ["would overwrite the input"]


def _case_average_over_an_earlier_average(tmp):
    run = _run_with_checkpoints(tmp)
    _model_folder(run / "averaged")
    return "average", [str(run), "--last", "2"], ["already holds", "--overwrite_output_dir"]


def _case_export_into_another_export(tmp):
    model = _model_folder(tmp / "model")
    (tmp / "ct2").mkdir()
    (tmp / "ct2" / "model.bin").write_bytes(b"x")
    return (
        "export",
        [str(model), str(tmp / "ct2"), "--format", "onnx"],
        ["already holds files (another export?)", "--overwrite_output_dir"],
    )


def _case_tokenizer_over_a_tokenizer(tmp):
    (tmp / "tok").mkdir()
    (tmp / "tok" / "tokenizer.json").write_text("{}")
    return (
        "train_tokenizer",
        ["--output_dir", str(tmp / "tok")],
        ["already holds a tokenizer", "--overwrite"],
    )


def _case_build_corpus_of_another_dataset(tmp):
    return "build_corpus", ["--dataset", "pairs.jsonl"], ["builds the Bible corpus"]


def _case_finetune_a_missing_model(tmp):
    args = [str(tmp / "nope"), "--dataset", str(tmp / "d.jsonl"), "--output_dir", str(tmp / "ft")]
    return "finetune", args, ["nope does not exist"]


def _case_score_files_of_different_line_counts(tmp):
    (tmp / "a.en").write_text("one\ntwo\nthree\n")
    (tmp / "b.es").write_text("uno\ndos\n")
    args = [str(tmp / "nope"), "--source", str(tmp / "a.en"), "--target", str(tmp / "b.es")]
    return "score", args, ["line 3 of", "has no partner"]


def _case_score_a_missing_model(tmp):
    (tmp / "a.en").write_text("one\n")
    args = [str(tmp / "nope"), "--source", str(tmp / "a.en"), "--target", str(tmp / "a.en")]
    return "score", args, ["nope does not exist"]


CASES = {
    name.removeprefix("_case_"): fn
    for name, fn in dict(globals()).items()
    if name.startswith("_case_")
}


def _tool(name: str):
    import importlib

    return importlib.import_module(f"vanilla_transformer.cli.{name}")


@pytest.mark.parametrize("case", CASES)
def test_a_user_error_is_one_or_two_lines_naming_the_fix_without_a_traceback(
    case, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    tool, argv, words = CASES[case](tmp_path)
    code = _tool(tool).main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "Traceback" not in err
    assert 1 <= len(err.splitlines()) <= 2, err
    assert err.startswith("error: "), err
    for word in words:
        assert word in err, (word, err)


def test_a_failed_start_leaves_no_run_folder_behind(tmp_path, capsys):
    tool, argv, _ = CASES["train_resume_nothing"](tmp_path)
    assert _tool(tool).main(argv) != 0
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback_of_the_same_error(tmp_path):
    tool, argv, _ = CASES["evaluate_missing_checkpoint"](tmp_path)
    with pytest.raises(UserError, match="checkpoint_9 does not exist"):
        _tool(tool).main([*argv, "--debug"])


@pytest.mark.parametrize(
    "tool",
    ["evaluate", "average", "export", "build_corpus", "train_tokenizer", "finetune", "train"],
)
def test_every_tool_lists_debug_and_shows_defaults_in_its_help(tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _tool(tool).main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "--debug" in out and "(default: " in out


def test_no_save_hub_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        _tool("train").main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--no_save_hub, --no-save-hub Turn off --save_hub." in out
