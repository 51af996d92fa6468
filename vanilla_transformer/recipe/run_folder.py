"""A training run's folder: one run at a time (`RunLock`), a full disk named as such
(`disk_full_error`), and the rules of resuming (`RESUME_LOCKED_OPTIONS`, `resume_conflicts`).
What a checkpoint is, and its manifest, is `checkpoints.py`'s.

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
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path

LOCK_FILE = "run.lock"

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
