"""Trainer registration: nnU-Net finds the plugin's trainers after a plain install, with no manual env editing."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import clean_env, run

from nnunet_freetumor import _register

REPO = Path(__file__).resolve().parents[1]
# nnU-Net prints "Using trainer 'X' from: FOLDER" for trainers found through nnUNet_extTrainer
LOOKUP = textwrap.dedent("""
    import sys
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find
    for name in sys.argv[1:]:
        find(name)
""")


def found_in(stdout: str) -> dict[str, Path]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("Using trainer '"):
            name, folder = line[len("Using trainer '") :].split("' from: ")
            out[name] = Path(folder.strip())
    return out


def test_register_appends_the_trainers_folder_and_keeps_the_users_entries():
    env = {"nnUNet_extTrainer": os.pathsep.join(["/my/trainers", "/other"])}
    _register.register(env)
    assert env["nnUNet_extTrainer"].split(os.pathsep) == ["/my/trainers", "/other", _register.TRAINERS_DIR]
    _register.register(env)  # idempotent
    assert env["nnUNet_extTrainer"].split(os.pathsep).count(_register.TRAINERS_DIR) == 1
    empty: dict[str, str] = {}
    _register.register(empty)
    assert empty["nnUNet_extTrainer"] == _register.TRAINERS_DIR


def test_the_trainers_folder_holds_only_trainer_modules():
    import importlib

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    for f in Path(_register.TRAINERS_DIR).glob("*.py"):
        if f.name == "__init__.py":
            continue
        mod = importlib.import_module(f"nnunet_freetumor.trainers.{f.stem}")
        assert isinstance(getattr(mod, f.stem, None), type) and issubclass(getattr(mod, f.stem), nnUNetTrainer)


def test_a_fresh_shell_finds_the_trainers_and_a_users_own_trainer_folder(tmp_path):
    user = tmp_path / "user_trainers"
    user.mkdir()
    (user / "myTrainer.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n"
        "class myTrainer(nnUNetTrainer):\n    pass\n"
    )
    env = clean_env(nnUNet_extTrainer=str(user))
    out = run(
        [sys.executable, "-c", LOOKUP, "nnUNetTrainerFreeTumor", "nnUNetTrainerHandcraftedTumor", "myTrainer"], env
    ).stdout
    assert found_in(out) == {
        "nnUNetTrainerFreeTumor": Path(_register.TRAINERS_DIR),
        "nnUNetTrainerHandcraftedTumor": Path(_register.TRAINERS_DIR),
        "myTrainer": user,
    }


def test_interpreter_start_does_not_import_torch():
    code = "import os, sys; print('torch' in sys.modules, os.environ['nnUNet_extTrainer'])"
    out = run([sys.executable, "-c", code], clean_env()).stdout.split()
    assert out[0] == "False" and out[1].endswith("trainers")


@pytest.mark.e2e
def test_wheel_install_registers_the_trainers_and_maps_subpackages(tmp_path):
    """A non-editable install: build the wheel, install it into a fresh environment that borrows this venv's
    dependencies (plain path entry: no .pth of this venv runs there), look the trainers up from a clean shell."""
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, REPO], clean_env())
    (wheel,) = wheels.glob("nnunet_freetumor-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], clean_env())
    py = venv / "bin" / "python"
    purelib = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (purelib / "_deps_from_test_venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --target, not --prefix: pip would uninstall the editable install of the running environment first
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", purelib, wheel], clean_env())
    assert (purelib / "nnunet_freetumor.pth").is_file()
    out = run([py, "-c", LOOKUP, "nnUNetTrainerFreeTumor", "nnUNetTrainerBaseline"], clean_env(), cwd=tmp_path).stdout
    found = found_in(out)
    assert set(found) == {"nnUNetTrainerFreeTumor", "nnUNetTrainerBaseline"}
    assert all(f == purelib / "nnunet_freetumor" / "trainers" for f in found.values()), found
    code = (
        "import importlib.util as u; import nnunet_freetumor.generator.train, nnunet_freetumor.entrypoints._common;"
        " print(u.find_spec('generator') is None, u.find_spec('entrypoints') is None)"
    )
    # (run outside the checkout: its folders would shadow the installed package)
    assert run([py, "-c", code], clean_env(), cwd=tmp_path).stdout.split() == ["True", "True"]
