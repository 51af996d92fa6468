"""Publishing safety: the push tool never reads outside the folder it publishes, never writes into
it (nor through a symlink, nor into a huggingface_hub cache), and stops on a user error with one
or two lines. Nothing here touches the network: real pushes go to `FakeApi`."""

import hashlib
import json
import os
from pathlib import Path

import pytest

import vanilla_transformer
from tests.conftest import run_script
from tests.publishing.conftest import EXPECTED_FILES, FakeApi, card_info
from vanilla_transformer.cli import push as push_tool
from vanilla_transformer.errors import UserError
from vanilla_transformer.publishing import hub
from vanilla_transformer.publishing.hub import push_folder, save_hub_folder

PACKAGE = Path(vanilla_transformer.__file__).parent
MODELING = "modeling_vanilla_transformer.py"
OLD_MODELING = b"# an earlier release's modeling file\n"


def tree_state(*roots: Path) -> dict:
    """Every entry under `roots`: a file's sha256, a symlink's target, or 'dir'."""
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    state[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    state[str(path)] = "dir"
                else:
                    state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture
def outdated_folder(tmp_path, model, tokenizer) -> Path:
    """A Hub folder that publishing must bring up to date: an earlier release's modeling file and
    a card naming another repo (so the staged copy gets new remote code and a new card)."""
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    (folder / MODELING).write_bytes(OLD_MODELING)
    return folder


def publish(folder: Path, how: str, tmp_path: Path, **kwargs) -> dict[str, bytes]:
    """Publish `folder` as 'me/vt' by a dry run or a push to `FakeApi`; the files sent."""
    if how == "dry run":
        push_folder(folder, "me/vt", dry_run_dir=tmp_path / "dry", prepare=True, **kwargs)
        repo = tmp_path / "dry" / "repo"
        return {p.name: p.read_bytes() for p in repo.iterdir()}
    api = FakeApi()
    push_folder(folder, "me/vt", api=api, prepare=True, **kwargs)
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    return api.uploaded


def check_published_current(sent: dict[str, bytes]) -> None:
    assert sent.keys() == EXPECTED_FILES
    assert sent[MODELING] == (PACKAGE / MODELING).read_bytes()
    assert b'from_pretrained("me/vt", trust_remote_code=True)' in sent["README.md"]


@pytest.mark.parametrize("how", ["dry run", "push"])
def test_dry_run_changes_nothing_in_its_input(outdated_folder, tmp_path, how):
    before = tree_state(outdated_folder)
    sent = publish(outdated_folder, how, tmp_path)
    check_published_current(sent)  # the upload was made current ...
    assert tree_state(outdated_folder) == before  # ... the folder was not
    assert (outdated_folder / MODELING).read_bytes() == OLD_MODELING


def test_push_refuses_a_symlink_that_leaves_the_folder(outdated_folder, tmp_path):
    secret = tmp_path / "k"
    secret.write_text("SECRET\n")
    (outdated_folder / "special_tokens_map.json").symlink_to(secret)
    api = FakeApi()
    for kwargs in ({"dry_run_dir": tmp_path / "dry"}, {"api": api}):
        with pytest.raises(UserError) as error:
            push_folder(outdated_folder, "me/x", prepare=True, **kwargs)
        message = str(error.value)
        assert "special_tokens_map.json" in message and str(secret) in message
    assert api.calls == [] and not (tmp_path / "dry").exists()
    assert secret.read_text() == "SECRET\n"


def test_push_never_writes_through_a_symlink(outdated_folder, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "README.md").write_text("someone else's file\n")
    (outdated_folder / "README.md").unlink()
    (outdated_folder / "README.md").symlink_to(outside / "README.md")
    before = tree_state(outdated_folder, outside)
    with pytest.raises(UserError, match="README.md is a symlink to .*outside"):
        push_folder(outdated_folder, "me/vt", dry_run_dir=tmp_path / "dry", prepare=True)
    assert tree_state(outdated_folder, outside) == before
    # Links inside the folder are read (as copies of their targets), never written through.
    (outdated_folder / "README.md").unlink()
    notes = outdated_folder / "notes"
    notes.mkdir()
    (notes / "old_modeling.py").write_bytes(OLD_MODELING)
    (outdated_folder / MODELING).unlink()
    (outdated_folder / MODELING).symlink_to("notes/old_modeling.py")
    (notes / "card.md").write_text("# a card without metadata\n")
    (outdated_folder / "README.md").symlink_to("notes/card.md")
    before = tree_state(outdated_folder)
    for how in ("dry run", "push"):
        check_published_current(publish(outdated_folder, how, tmp_path))
        assert tree_state(outdated_folder) == before


def hub_cache_snapshot(folder: Path, cache: Path) -> Path:
    """`folder` laid out as huggingface_hub caches a download: blobs named by hash, a snapshot
    of symlinks `../../blobs/<hash>`, refs/main naming the revision."""
    repo = cache / "models--someone--vt"
    revision = "0" * 40
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        data = path.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / path.name).symlink_to(f"../../blobs/{blob}")
    return snapshot


@pytest.mark.parametrize("how", ["dry run", "push"])
def test_publishing_from_a_hub_cache_snapshot_leaves_the_cache_untouched(
    outdated_folder, tmp_path, how
):
    cache = tmp_path / "hf_cache" / "hub"
    snapshot = hub_cache_snapshot(outdated_folder, cache)
    before = tree_state(cache)
    check_published_current(publish(snapshot, how, tmp_path))
    assert tree_state(cache) == before
    with pytest.raises(UserError, match="huggingface_hub cache"):  # no dry run into the cache
        push_folder(snapshot, "me/vt", dry_run_dir=snapshot.parent / "preview")
    assert tree_state(cache) == before


def test_the_dry_run_folder_may_not_overlap_the_input(outdated_folder, tmp_path):
    before = tree_state(tmp_path)
    for dry_run_dir in (outdated_folder / "preview", outdated_folder, tmp_path):
        with pytest.raises(UserError, match="overlaps the folder to publish"):
            push_folder(outdated_folder, "me/vt", dry_run_dir=dry_run_dir, prepare=True)
    assert tree_state(tmp_path) == before


def test_a_dry_run_replaces_a_symlinked_plan_instead_of_writing_through_it(
    outdated_folder, tmp_path
):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / "dry").mkdir()
    (tmp_path / "dry" / "upload_plan.json").symlink_to(victim)
    push_folder(outdated_folder, "me/vt", dry_run_dir=tmp_path / "dry", prepare=True)
    assert victim.read_text() == "keep me\n"
    plan = tmp_path / "dry" / "upload_plan.json"
    assert not plan.is_symlink() and json.loads(plan.read_text())["repo_id"] == "me/vt"


def test_a_model_file_that_is_not_a_regular_file_is_refused_not_read(outdated_folder, tmp_path):
    (outdated_folder / "special_tokens_map.json").unlink(missing_ok=True)
    os.mkfifo(outdated_folder / "special_tokens_map.json")  # reading it would block forever
    with pytest.raises(UserError, match="special_tokens_map.json is not a regular file"):
        push_folder(outdated_folder, "me/vt", dry_run_dir=tmp_path / "dry")


# ------------------------------------------------------------------------------------------------
# The tool: one or two lines on a user error, the traceback with --debug
# ------------------------------------------------------------------------------------------------


def not_a_model_folder(tmp_path, outdated_folder):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("not a model\n")
    return [str(tmp_path / "notes"), "me/vt", "--dry_run", str(tmp_path / "dry")]


def escaping_symlink(tmp_path, outdated_folder):
    (tmp_path / "k").write_text("SECRET\n")
    (outdated_folder / "special_tokens_map.json").symlink_to(tmp_path / "k")
    return [str(outdated_folder), "me/vt", "--dry_run", str(tmp_path / "dry")]


USER_ERRORS = {
    "no token": (lambda tmp, folder: [str(folder), "me/vt"], "no Hugging Face token found"),
    "missing folder": (
        lambda tmp, folder: [str(tmp / "nowhere"), "me/vt", "--dry_run", str(tmp / "dry")],
        "nowhere is not a folder",
    ),
    "not a model folder": (not_a_model_folder, "has no config.json: not a model folder"),
    "symlink escaping": (escaping_symlink, "special_tokens_map.json is a symlink to"),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_a_user_error_is_one_or_two_lines_and_a_nonzero_exit(
    case, outdated_folder, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(hub, "get_token", lambda: None)  # whatever the machine has stored
    make_argv, expected = USER_ERRORS[case]
    argv = make_argv(tmp_path, outdated_folder)
    capsys.readouterr()
    assert push_tool.main(argv) != 0
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert 1 <= len(err.strip().splitlines()) <= 2, err
    with pytest.raises(UserError, match=expected):  # --debug: the exception and its traceback
        push_tool.main([*argv, "--debug"])


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    args = [tmp_path / "nowhere", "me/vt", "--dry_run", tmp_path / "dry"]
    quiet = run_script("push_to_hub.py", *args)
    loud = run_script("push_to_hub.py", *args, "--debug")
    assert quiet.returncode != 0 and loud.returncode != 0
    assert "Traceback" not in quiet.stderr and "error: " in quiet.stderr
    assert "Traceback" in loud.stderr and "UserError" in loud.stderr
