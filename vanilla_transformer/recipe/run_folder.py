"""A training run's folder: one run at a time (`RunLock`), a full disk named as such
(`disk_full_error`), and the rules of resuming (`RESUME_LOCKED_OPTIONS`, `resume_conflicts`).
What a checkpoint is, and its manifest, is `checkpoints.py`'s. This module owns the run folder's
file names (`RUN_CONFIG_FILE`, `SUMMARY_FILE`, `WEIGHT_FILES`), their readers (`find_run_dir`,
`run_training_values`, `recorded_hub_folder`) and file hashing (`sha256_file`).

Paths a run records (`summary.json`'s `hub_folder`, `training_config.json`'s `bible_cache_dir` or a
local `dataset`) are resolved against the run folder, never the current working directory: a path
inside the run's `output_dir` is taken relative to the run folder (wherever it now is), any other
relative path relative to the folder the run was started in (the run folder minus its recorded
`output_dir`). A relative path whose origin cannot be found is refused with a message.

Layout of `output_dir`::

    run.lock                   held (fcntl.flock) by the running process; names its pid and host
    training_config.json       the run's options; resuming reloads them
    train_log.jsonl
    checkpoints/checkpoint_<step>/
        model.safetensors, optimizer.bin, random_states_<rank>.pkl, ...   (accelerate.save_state)
        trainer_state.json     counters, sampler position, scheduler
        manifest.json          sha256 and size of every other file, written last (checkpoints.py)
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME

from ..errors import UserError
from .options import CorpusOptions

LOCK_FILE = "run.lock"
RUN_CONFIG_FILE = "training_config.json"  # the run's options; resuming reloads them
SUMMARY_FILE = "summary.json"  # written at the end: steps, scores, hub_folder
HUB_SUBFOLDER = "hub"  # the final model's default place
# The weight file names are transformers' own (save_pretrained and accelerate write them).
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME)
# Options of training_config.json that name files, resolved like every recorded path.
RECORDED_PATH_OPTIONS = ("bible_cache_dir", "dataset", "tokenizer", "hub_folder")

# Options whose change makes a resumed run another run: they change the order or content of the
# batches (seed, token budgets, corpus, filters, tokenizer) or the model's shape. Resuming with
# another value is refused unless `override_resume_options` is given.
RESUME_LOCKED_OPTIONS = (
    "seed",
    "batch_tokens",
    "update_tokens",
    "gradient_accumulation_steps",
    "dataset",
    "dataset_config",
    "english",
    "src_lang",
    "tgt_lang",
    "tsv_quoting",
    "max_source_length",
    "max_target_length",
    "tokenizer",
    "tokenizer_vocab_size",
    "d_model",
    "ffn_dim",
    "attention_heads",
    "encoder_layers",
    "decoder_layers",
    "norm_first",
    "max_position_embeddings",
)


# --------------------------------------------------------------------------------------------------
# One run per folder
# --------------------------------------------------------------------------------------------------


class RunLockedError(RuntimeError):
    """Another live process is training into the same output folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder, held while training.

    The lock is `fcntl.flock` on `run.lock`: the kernel releases it when its holder exits, however
    it exits, so a lock left by a killed run (SIGKILL, power loss of a local disk) never blocks
    the next one. The file records the holder's pid, host and start time: a second run fails
    fast naming them; a run that finds the record of a pid that is no longer alive reports that
    it takes over a stale lock. A clean release empties the record.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None
        self.stale_holder: dict | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by another training run ({_describe(holder)}; "
                f"lock file {self.path}). Wait for it to finish, stop it, or choose another "
                "--output_dir."
            ) from None
        previous = _read_holder(fd)
        if previous.get("pid"):
            # A record left behind with the lock free: its run ended without releasing it.
            self.stale_holder = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # a clean exit leaves no holder behind
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: Mapping) -> str:
    if not holder.get("pid"):
        return "holder unknown"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {holder['pid']} on {holder.get('host', '?')}, started {when}"


def describe_stale(holder: Mapping) -> str:
    pid, host = holder.get("pid"), holder.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and _pid_alive(pid):
        state = f"pid {pid} now belongs to another process"
    else:
        state = f"pid {pid} is no longer running"
    return f"took over the stale lock of a run that was killed ({_describe(holder)}; {state})"


# --------------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------------

# Below this many free bytes a failed write is taken as a full disk, whatever error the library
# raised (torch's zip writer reports ENOSPC as "unexpected pos ...", without errno).
_NEARLY_FULL = 1 << 20


def _mentions_enospc(err: BaseException | None) -> bool:
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        text = str(err)
        if "No space left" in text or "os error 28" in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def disk_full_error(err: BaseException, folder: Path, needed: int = 0) -> OSError | None:
    """An `OSError(ENOSPC)` naming `folder` and its free space when `err` (raised while writing
    into it) came from a full disk; None otherwise. `needed`: bytes the write was expected to
    take (e.g. the previous checkpoint's size): less free space than that also counts as full."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    full = _mentions_enospc(err) or (free is not None and free < max(_NEARLY_FULL, needed))
    if not full:
        return None
    return OSError(
        errno.ENOSPC,
        f"no space left on {folder} (No space left on device: "
        f"{'unknown' if free is None else f'{free:,} bytes'} free; the failed write raised "
        f"{type(err).__name__}: {str(err)[:200]})",
    )


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# Resuming
# --------------------------------------------------------------------------------------------------


def resume_conflicts(saved: Mapping, current: Mapping) -> list[tuple[str, object, object]]:
    """(option, saved value, current value) for every locked option that differs."""
    return [
        (name, saved[name], current.get(name))
        for name in RESUME_LOCKED_OPTIONS
        if name in saved and saved[name] != current.get(name)
    ]


__all__ = [
    "LOCK_FILE",
    "RESUME_LOCKED_OPTIONS",
    "RunLock",
    "RunLockedError",
    "describe_stale",
    "disk_full_error",
    "folder_size",
    "resume_conflicts",
]


# --------------------------------------------------------------------------------------------------
# Files of a run folder, resolved against the run folder (never the working directory)
# --------------------------------------------------------------------------------------------------


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def find_run_dir(path: str | Path) -> Path | None:
    """The training run a folder belongs to: `path` itself or the nearest of its two parents
    holding `training_config.json` (a run, its Hub folder, or `checkpoints/checkpoint_N`)."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / RUN_CONFIG_FILE).is_file():
            return candidate
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); restore or remove it.") from None


def _recorded_output_dir(run_dir: Path) -> Path | None:
    config = run_dir / RUN_CONFIG_FILE
    output_dir = _read_json(config).get("output_dir") if config.is_file() else None
    return Path(output_dir) if output_dir else None


def run_origin(run_dir: str | Path) -> Path | None:
    """The folder the run was started in: `run_dir` minus its recorded relative `output_dir`
    (`/x/runs/cpu-small` with `runs/cpu-small` -> `/x`); None if it cannot be told."""
    run_dir = Path(run_dir).absolute()
    output_dir = _recorded_output_dir(run_dir)
    if output_dir is None:
        return None
    if output_dir.is_absolute():
        return None
    parts = [p for p in output_dir.parts if p not in ("", ".")]
    if ".." in parts or tuple(run_dir.parts[-len(parts) :]) != tuple(parts):
        return None
    return Path(*run_dir.parts[: -len(parts)])


def recorded_path(run_dir: str | Path, recorded: str | Path, must_exist: bool = True) -> Path:
    """A path the run at `run_dir` recorded, resolved against the run folder: a path inside the
    run's recorded `output_dir` is re-rooted at `run_dir` (the run may have moved); an absolute
    path is itself; another relative path is taken from the folder the run was started in.

    Raises:
        UserError: a relative path whose origin cannot be told (never guessed from the cwd).
    """
    run_dir, recorded = Path(run_dir).absolute(), Path(recorded)
    output_dir = _recorded_output_dir(run_dir)
    for base in filter(None, (output_dir, output_dir and output_dir.absolute())):
        if recorded.is_absolute() == base.is_absolute():
            with contextlib.suppress(ValueError):
                return run_dir / recorded.relative_to(base)
    if recorded.is_absolute():
        return recorded
    origin = run_origin(run_dir)
    if origin is None:
        if not must_exist:
            return run_dir / recorded
        raise UserError(
            f"{run_dir} records the relative path {str(recorded)!r} but not where the run was "
            "started; pass the file or folder explicitly."
        )
    return origin / recorded


def run_training_values(path: str | Path) -> dict:
    """The training options recorded by the run `path` belongs to (empty if none), with the paths
    they name resolved against the run folder (a `dataset` or `tokenizer` that is not a local path,
    e.g. a Hub id, is kept as it is)."""
    run_dir = find_run_dir(path)
    if run_dir is None:
        return {}
    values = _read_json(run_dir / RUN_CONFIG_FILE)
    for name in RECORDED_PATH_OPTIONS:
        value = values.get(name)
        if (
            not value
            or value == "bible"
            or (name == "bible_cache_dir" and values.get("dataset", "bible") != "bible")
        ):
            continue
        try:
            resolved = recorded_path(run_dir, value)
        except UserError as err:
            if name == "bible_cache_dir":  # the same corpus is rebuilt: not a wrong result
                logging.getLogger(__name__).warning(f"{err} Using {value} from the current folder.")
            continue
        if name == "bible_cache_dir" or resolved.exists():
            values[name] = str(resolved)
    return values


def recorded_hub_folder(run_dir: str | Path) -> Path | None:
    """The final model folder `summary.json` names, resolved against the run folder (None if the
    run has no summary or names none)."""
    summary = Path(run_dir) / SUMMARY_FILE
    hub_folder = _read_json(summary).get("hub_folder") if summary.is_file() else None
    return recorded_path(run_dir, hub_folder) if hub_folder else None


def run_corpus_options(path: str | Path, given: CorpusOptions) -> CorpusOptions:
    """The corpus options of the run `path` belongs to (its paths resolved against the run
    folder) when none were given on the command line (all defaults); otherwise `given`."""
    recorded = run_training_values(path) if given == CorpusOptions() else {}
    if not recorded:
        return given
    names = [f.name for f in dataclasses.fields(CorpusOptions)]
    return CorpusOptions(**{k: recorded[k] for k in names if k in recorded})
