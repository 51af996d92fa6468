"""A run folder's guarantees, in process: one run at a time, checkpoints verified against their
manifest before a resume (falling back to the newest whole one), a full disk named as such with
the previous checkpoint intact, and the resume rules."""

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from vanilla_transformer.recipe.checkpoints import (
    MANIFEST_FILE,
    CheckpointVerificationError,
    complete_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from vanilla_transformer.recipe.run_folder import (
    RESUME_LOCKED_OPTIONS,
    RunLock,
    RunLockedError,
    describe_stale,
    disk_full_error,
    resume_conflicts,
)

# --------------------------------------------------------------------------------------------------
# One run per folder
# --------------------------------------------------------------------------------------------------


def test_a_second_holder_of_a_run_folder_fails_fast_naming_the_first(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(
            RunLockedError, match=rf"in use by another training run \(pid {os.getpid()}"
        ):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path) as again:  # released on exit: the folder is free again
        assert again.stale_holder is None


def test_the_lock_of_a_killed_run_is_recognised_as_stale_and_taken_over(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from vanilla_transformer.recipe.run_folder import RunLock; "
            f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no chance to release
        holder.wait()
    with RunLock(tmp_path) as lock:
        assert lock.stale_holder is not None and lock.stale_holder["pid"] == holder.pid
        assert f"pid {holder.pid} is no longer running" in describe_stale(lock.stale_holder)


def test_training_into_a_locked_folder_fails_before_doing_any_work(tmp_path):
    from vanilla_transformer.recipe.training import resolve_config, train

    config = resolve_config(output_dir=str(tmp_path), dataset=str(tmp_path / "missing.jsonl"))
    with RunLock(tmp_path), pytest.raises(RunLockedError, match=str(tmp_path)):
        train(config)
    assert not (tmp_path / "training_config.json").exists()


# --------------------------------------------------------------------------------------------------
# Manifests: a damaged checkpoint is named and skipped, the newest whole one resumed
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path):
    """A run folder with checkpoints 1 and 2 of a small model and its Adam state."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.Adam(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    for step in (1, 2):
        model(torch.randn(3, 8)).sum().backward()
        optimizer.step()
        save_checkpoint(accelerator, tmp_path, {"step": step}, keep_last=5)
    return tmp_path, accelerator


def flip_a_bit_in_tensor_data(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10  # the last bytes of a safetensors file are tensor data, not the header
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"\x80\x04garbage" * 10)


@pytest.mark.parametrize(
    "name, harm",
    [
        ("model.safetensors", truncate),
        ("model.safetensors", flip_a_bit_in_tensor_data),
        ("optimizer.bin", garbage),
        ("random_states_0.pkl", garbage),
        ("trainer_state.json", lambda p: p.write_text("{not json")),
        ("optimizer.bin", os.remove),
    ],
    ids=[
        "truncated-weights",
        "flipped-bit",
        "garbage-optimizer",
        "garbage-rng",
        "bad-state",
        "missing",
    ],
)
def test_resume_skips_a_damaged_latest_checkpoint_naming_the_file_and_takes_the_previous(
    run, name, harm, caplog
):
    run_dir, accelerator = run
    latest = complete_checkpoints(run_dir)[-1]
    harm(latest / name)
    with pytest.raises(CheckpointVerificationError, match=rf"checkpoint_2/{name}"):
        verify_checkpoint(latest)
    with caplog.at_level("WARNING"):
        chosen = resolve_checkpoint(run_dir, "latest")
    assert chosen.name == "checkpoint_1"
    assert f"skipping checkpoint checkpoint_2: {latest / name}" in caplog.text
    assert load_checkpoint(accelerator, chosen)["step"] == 1
    # Asked for by name, a damaged checkpoint is refused, never loaded.
    with pytest.raises(CheckpointVerificationError, match=name):
        resolve_checkpoint(run_dir, str(latest))


def test_every_saved_checkpoint_has_a_manifest_covering_all_its_files(run):
    run_dir, _ = run
    for checkpoint in complete_checkpoints(run_dir):
        files = json.loads((checkpoint / MANIFEST_FILE).read_text())["files"]
        on_disk = {p.name for p in checkpoint.iterdir() if p.name != MANIFEST_FILE}
        assert set(files) == on_disk and {"model.safetensors", "trainer_state.json"} <= on_disk
        verify_checkpoint(checkpoint)


def test_no_checkpoint_that_verifies_is_an_error_listing_each_reason(run):
    run_dir, _ = run
    for checkpoint in complete_checkpoints(run_dir):
        garbage(checkpoint / "optimizer.bin")
    with pytest.raises(CheckpointVerificationError, match=r"checkpoint_2: .*checkpoint_1: "):
        resolve_checkpoint(run_dir, "latest")


# --------------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 3 MB tmpfs (needs root and mount permission; skipped with the reason otherwise)."""
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (the ENOSPC shim test covers this case)")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_real_full_disk_names_the_folder_and_keeps_the_previous_checkpoint(small_filesystem):
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(360, 360)  # ~0.5 MB of weights, ~1 MB of Adam state: 1.6 MB a save
    optimizer = torch.optim.Adam(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.randn(2, 360)).sum().backward()
    optimizer.step()
    save_checkpoint(accelerator, small_filesystem, {"step": 1}, keep_last=5)
    with pytest.raises(OSError) as caught:
        save_checkpoint(accelerator, small_filesystem, {"step": 2}, keep_last=5)
    assert caught.value.errno == errno.ENOSPC
    message = str(caught.value)
    assert f"no space left on {small_filesystem / 'checkpoints'}" in message
    assert "checkpoint_1 is intact" in message
    assert [p.name for p in complete_checkpoints(small_filesystem)] == ["checkpoint_1"]
    verify_checkpoint(small_filesystem / "checkpoints" / "checkpoint_1")
    assert not (small_filesystem / "checkpoints" / "checkpoint_2.tmp").exists()  # space given back


def test_an_error_that_is_not_a_full_disk_is_not_reported_as_one(tmp_path):
    assert disk_full_error(RuntimeError("unrelated"), tmp_path) is None
    enospc = OSError(errno.ENOSPC, "No space left on device")
    assert f"no space left on {tmp_path}" in str(disk_full_error(enospc, tmp_path))


# --------------------------------------------------------------------------------------------------
# Resume rules
# --------------------------------------------------------------------------------------------------


def test_changes_to_data_order_or_model_options_are_conflicts_and_others_are_not():
    saved = {"seed": 0, "batch_tokens": 200, "d_model": 16, "lr_factor": 1.0, "max_steps": 4}
    current = {**saved, "seed": 1, "d_model": 32, "lr_factor": 0.5, "max_steps": 8}
    assert resume_conflicts(saved, current) == [("seed", 0, 1), ("d_model", 16, 32)]
    assert {"seed", "batch_tokens", "update_tokens", "dataset", "tokenizer", "d_model"} <= set(
        RESUME_LOCKED_OPTIONS
    )


# --------------------------------------------------------------------------------------------------
# Paths a run records resolve against the run folder, never the working directory
# --------------------------------------------------------------------------------------------------


def _fake_run(root: Path, output_dir: str = "runs/cpu-small", hub_folder: str | None = None):
    """A finished run as training writes it from `root`: paths recorded relative to `root`."""
    from vanilla_transformer.recipe.run_folder import RUN_CONFIG_FILE, SUMMARY_FILE

    run = root / output_dir
    (run / "hub").mkdir(parents=True)
    (run / "hub" / "config.json").write_text("{}")
    (run / RUN_CONFIG_FILE).write_text(
        json.dumps({"output_dir": output_dir, "bible_cache_dir": "data_cache/bible"})
    )
    (run / SUMMARY_FILE).write_text(json.dumps({"hub_folder": hub_folder or f"{output_dir}/hub"}))
    return run


def test_a_run_named_from_another_folder_loads_its_own_model_not_a_decoy(tmp_path, monkeypatch):
    from vanilla_transformer.recipe.checkpoints import resolve_model_folder
    from vanilla_transformer.recipe.run_folder import run_training_values

    run = _fake_run(tmp_path / "project")
    decoy = _fake_run(tmp_path / "elsewhere")  # the same relative layout in the working directory
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert Path(resolve_model_folder(run)) == run / "hub"
    assert Path(resolve_model_folder(run)) != decoy / "hub"
    cache = run_training_values(run)["bible_cache_dir"]
    assert Path(cache) == tmp_path / "project" / "data_cache" / "bible"


def test_a_moved_run_still_finds_the_model_inside_it(tmp_path, monkeypatch):
    from vanilla_transformer.recipe.checkpoints import resolve_model_folder

    _fake_run(tmp_path / "project")
    moved = tmp_path / "archive" / "old-run"
    moved.parent.mkdir()
    (tmp_path / "project" / "runs" / "cpu-small").rename(moved)
    _fake_run(tmp_path / "cwd")
    monkeypatch.chdir(tmp_path / "cwd")
    assert Path(resolve_model_folder(moved)) == moved / "hub"


def test_a_relative_path_of_unknown_origin_is_refused_not_read_from_the_cwd(tmp_path, monkeypatch):
    from vanilla_transformer.errors import UserError
    from vanilla_transformer.recipe.run_folder import recorded_path

    _fake_run(tmp_path / "project")
    moved = tmp_path / "old-run"
    (tmp_path / "project" / "runs" / "cpu-small").rename(moved)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="some/model"):
        recorded_path(moved, "some/model")


def test_a_bible_cache_of_unknown_origin_is_named_in_a_warning(tmp_path, monkeypatch, caplog):
    from vanilla_transformer.recipe.run_folder import run_training_values

    _fake_run(tmp_path / "project")
    moved = tmp_path / "old-run"
    (tmp_path / "project" / "runs" / "cpu-small").rename(moved)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING"):
        assert run_training_values(moved)["bible_cache_dir"] == "data_cache/bible"
    assert "data_cache/bible" in caplog.text and "current folder" in caplog.text


def test_a_summary_with_an_absolute_hub_folder_is_read_as_it_is(tmp_path, monkeypatch):
    from vanilla_transformer.recipe.checkpoints import resolve_model_folder

    elsewhere = tmp_path / "published"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("{}")
    run = _fake_run(tmp_path / "project", hub_folder=str(elsewhere))
    monkeypatch.chdir(tmp_path)
    assert Path(resolve_model_folder(run)) == elsewhere


def test_file_hashing_and_weight_file_names_have_one_home():
    import vanilla_transformer.publishing.hub as hub
    import vanilla_transformer.recipe.checkpoints as checkpoints
    import vanilla_transformer.recipe.run_folder as run_folder

    assert checkpoints.sha256_file is run_folder.sha256_file
    assert hub._sha256 is run_folder.sha256_file
    assert checkpoints.WEIGHT_FILES is run_folder.WEIGHT_FILES
