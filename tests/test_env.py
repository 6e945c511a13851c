"""Every environment variable the plugin reads goes through nnunet_freetumor/env.py."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_freetumor import env
from nnunet_freetumor.errors import FreeTumorConfigError

REPO = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"nnUNet_[A-Za-z_]+")


def test_nnunet_folders_are_paths_and_one_error_names_every_missing_one():
    assert env.nnunet_folders(env.RAW, environ={env.RAW: "/r"}) == {env.RAW: Path("/r")}
    with pytest.raises(FreeTumorConfigError, match="nnUNet_preprocessed, nnUNet_results"):
        env.nnunet_folders(env.RAW, env.PREPROCESSED, env.RESULTS, environ={env.RAW: "/r", env.RESULTS: ""})


def test_schedule_overrides_are_validated_positive_integers():
    assert env.schedule_overrides({}) == {}
    assert env.schedule_overrides({"nnUNet_freetumor_epochs": "3", "nnUNet_freetumor_iters": "5"}) == {
        "num_epochs": 3,
        "num_iterations_per_epoch": 5,
    }
    assert env.schedule_overrides({"nnUNet_freetumor_save_every": "10"}) == {"save_every": 10}  # nnU-Net's attribute
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(FreeTumorConfigError, match="nnUNet_freetumor_val_iters must be a positive integer"):
            env.schedule_overrides({"nnUNet_freetumor_val_iters": bad})


def test_seed_flags_and_unset_values():
    assert env.seed({}) is None and env.seed({env.SEED: "-7"}) == -7
    with pytest.raises(FreeTumorConfigError, match="nnUNet_freetumor_seed must be an integer"):
        env.seed({env.SEED: "x"})
    assert env.flag(env.TRUST_CHECKPOINTS, {env.TRUST_CHECKPOINTS: "1"})
    assert not env.flag(env.TRUST_CHECKPOINTS, {env.TRUST_CHECKPOINTS: "yes"})
    assert env.get(env.GENERATOR, {env.GENERATOR: ""}) is None and env.path(env.CONFIG, {}) is None


def test_nnunet_folders_are_what_nnunet_sees_also_when_set_after_import():
    code = (
        "import os, nnunetv2.paths as p; from nnunet_freetumor import env; os.environ['nnUNet_results'] = '/late'; "
        "print(p.nnUNet_results, env.get(env.RESULTS))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.split()[-2:]
    assert out == ["/late", "/late"]


def test_no_module_but_env_names_a_variable():
    """Outside env.py no code spells an nnU-Net or plugin variable's name as a string of its own (a key to read the
    environment with); nnU-Net's trainer registration (nnUNet_extTrainer, at interpreter start) is the exception."""
    offenders = []
    for root in ("nnunet_freetumor", "generator", "entrypoints"):
        for f in (REPO / root).rglob("*.py"):
            if f.name in ("env.py", "_register.py") or any(p.is_symlink() for p in (f, *f.parents)):
                continue
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.fullmatch(node.value):
                    offenders.append(f"{f.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not offenders, "\n".join(offenders)
