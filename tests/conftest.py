"""Shared fixtures: a tiny phantom dataset run through the real nnU-Net command-line tools, once per session.

Everything runs in subprocesses with a clean environment (only nnU-Net's three paths + CPU settings), exactly as a
user's shell would: the trainers must be found through the installed package, not through test-time imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
DATASET_ID = 901
DATASET = "Dataset901_FreeTumorDemo"
# a small schedule for every training in the tests
SHORT = {"nnUNet_freetumor_epochs": "1", "nnUNet_freetumor_iters": "4", "nnUNet_freetumor_val_iters": "1"}
# for tests that need at least one synthetic tumor: fold 0 of the demo trains on 6 cases, 2 of them healthy, so a
# sample is a synthesis candidate with p ~ 1/3 and SHORT's 4 iterations x 2 samples draw none with p = (2/3)^8 ~ 4 %
# (a CI run failed that way). 12 iterations: (2/3)^24 ~ 6e-5 per epoch.
ENOUGH_SAMPLES = {"nnUNet_freetumor_iters": "12"}


def clean_env(dirs: dict[str, Path] | None = None, **extra: str) -> dict[str, str]:
    """A user's shell: no nnU-Net/plugin variables but the ones given, this venv first on PATH, 2 CPU threads.

    PYTHONPATH is dropped too: a developer's PYTHONPATH pointing at another checkout would put that checkout's package
    in front of the installed one (the wheel test then looked its trainers up in the wrong folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet") and k != "PYTHONPATH"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"nnUNet_def_n_proc": "2", "OMP_NUM_THREADS": "2", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"})
    if dirs:
        env.update({k: str(v) for k, v in dirs.items()})
    env.update(extra)
    return env


def run(
    cmd: list, env: dict[str, str], timeout: int = 900, expect_ok: bool = True, cwd=None
) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n--- stdout (tail)\n{proc.stdout[-4000:]}"
            f"\n--- stderr (tail)\n{proc.stderr[-4000:]}"
        )
    return proc


def train_env(demo: Demo, **extra: str) -> dict[str, str]:
    """nnUNetv2_train settings: no DA worker processes, short schedule."""
    return clean_env(demo.dirs, **{"nnUNet_n_proc_DA": "0", **SHORT, **extra})


@dataclass
class Demo:
    dirs: dict[str, Path]
    env: dict[str, str]

    @property
    def raw(self) -> Path:
        return self.dirs["nnUNet_raw"] / DATASET

    @property
    def preprocessed(self) -> Path:
        return self.dirs["nnUNet_preprocessed"] / DATASET

    def results(self, trainer: str, plans: str = "nnUNetPlans", configuration: str = "3d_fullres") -> Path:
        return self.dirs["nnUNet_results"] / DATASET / f"{trainer}__{plans}__{configuration}"


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Demo:
    """Phantom dataset 901 (8 training cases, half healthy; 2 test cases), planned and preprocessed for 3d_fullres,
    with a FreeTumor config that uses the short nnUNetTrainerBaseline as quality gate."""
    root = tmp_path_factory.mktemp("nnunet")
    dirs = {k: root / k.split("_")[1] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for d in dirs.values():
        d.mkdir()
    env = clean_env(dirs)
    run(
        [
            "freetumor_make_demo_dataset",
            "-d",
            DATASET_ID,
            "--n_train",
            8,
            "--n_test",
            2,
            "--shape",
            24,
            48,
            48,
            "--seed",
            0,
        ],
        env,
    )
    run(
        [
            "nnUNetv2_plan_and_preprocess",
            "-d",
            DATASET_ID,
            "-c",
            "3d_fullres",
            "--verify_dataset_integrity",
            "-npfp",
            2,
            "-np",
            2,
        ],
        env,
    )
    run(
        [
            "freetumor_config",
            "-d",
            DATASET_ID,
            "--gate_trainer",
            "nnUNetTrainerBaseline",
            "--p_synthesis",
            "1.0",
            "--write",
        ],
        env,
    )
    return Demo(dirs, env)


@pytest.fixture(scope="session")
def baseline(demo: Demo) -> Path:
    """The frozen segmenter S: a short nnUNetTrainerBaseline on fold 0."""
    run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerBaseline", "-device", "cpu"],
        train_env(demo),
    )
    ckpt = demo.results("nnUNetTrainerBaseline") / "fold_0" / "checkpoint_final.pth"
    assert ckpt.is_file()
    return ckpt


GENERATOR_ARGS = [
    "--steps",
    2,
    "--batch_size",
    2,
    "--gen_features",
    4,
    8,
    16,
    "--disc_features",
    4,
    8,
    "--device",
    "cpu",
    "--num_workers",
    0,
    "--monitor_every",
    2,
    "--monitor_n",
    4,
]


@pytest.fixture(scope="session")
def generator(demo: Demo, baseline: Path) -> Path:
    """A (barely) trained generator for fold 0."""
    run(["freetumor_train_generator", DATASET_ID, "-f", 0, *GENERATOR_ARGS], demo.env)
    path = demo.dirs["nnUNet_results"] / DATASET / "FreeTumorGenerator__nnUNetPlans__3d_fullres" / "fold_0"
    assert (path / "generator_final.safetensors").is_file()
    return path / "generator_final.safetensors"


def read_stats(fold_folder: Path) -> list[dict]:
    return json.loads((fold_folder / "freetumor_stats.json").read_text())


@pytest.fixture
def roots(tmp_path, monkeypatch) -> dict[str, Path]:
    """nnU-Net's three folders with the labeled dataset 980 of the unlabeled-scan tests (unlabeled_data.py)."""
    from unlabeled_data import make_roots

    return make_roots(tmp_path, monkeypatch)
