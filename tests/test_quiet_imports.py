"""No import-time noise from optional extras: a tool's `--help` prints nothing on stderr even with
torchao installed (transformers imports it), and the filters drop only the known harmless lines."""

import importlib.util
import logging
import os
import subprocess
import sys

import pytest

import vanilla_transformer  # noqa: F401  (installs the filters)
from tests.conftest import REPO, run_python


@pytest.mark.parametrize("tool", ["translate", "export", "serve"])
def test_a_tools_help_prints_nothing_on_stderr(tool):
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = run_python("-m", f"vanilla_transformer.cli.{tool}", "--help", cwd=REPO, env=env)
    assert proc.returncode == 0 and "usage:" in proc.stdout
    assert proc.stderr == ""


def test_the_filters_drop_only_the_known_lines(caplog):
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning(
            "Failed to load /x/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: no"
        )
        logging.getLogger("torch.utils._pytree").warning(
            "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by "
            "torch.compile as an opaque value type."
        )
        logging.getLogger("torchao").warning("Failed to quantize layer fc1: shape mismatch")
        logging.getLogger("torch.utils._pytree").warning("register_constant() failed for Foo")
    assert [r.getMessage() for r in caplog.records] == [
        "Failed to quantize layer fc1: shape mismatch",
        "register_constant() failed for Foo",
    ]


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_transformers_still_imports_torchao_so_the_quiet_help_proves_something():
    code = "import sys, vanilla_transformer.cli.translate; print('torchao' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.stdout.strip() == "True" and proc.stderr == ""
