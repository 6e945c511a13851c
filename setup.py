"""Build hooks: install ``nnunet_freetumor.pth`` next to the package.

nnU-Net v2 has no plugin entry point; it finds ``-tr`` trainers in its own package and in the folders listed in the
``nnUNet_extTrainer`` environment variable. The one-line .pth file imports ``nnunet_freetumor._register`` (no torch,
no numpy) at interpreter start, which appends our trainers folder to that variable, keeping the user's own entries.

Regular wheels get the file through ``build_py``; PEP 660 editable installs (``pip install -e .``) do not run
``build_py`` into the wheel, so ``editable_wheel`` writes it into the unpacked editable wheel as well.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "nnunet_freetumor.pth"
PTH_LINE = "import nnunet_freetumor._register\n"


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib, PTH_NAME)
        target.write_text(PTH_LINE)
        self.outfiles = [*getattr(self, "outfiles", []), str(target)]

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib, PTH_NAME))]


cmdclass = {"build_py": build_py_with_pth}

try:
    from setuptools.command.editable_wheel import editable_wheel

    class editable_wheel_with_pth(editable_wheel):
        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
            result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            Path(unpacked_wheel, PTH_NAME).write_text(PTH_LINE)
            return result

    cmdclass["editable_wheel"] = editable_wheel_with_pth
except ImportError:  # setuptools < 64 has no PEP 660 support; pyproject.toml requires a newer one anyway
    pass

setup(cmdclass=cmdclass)
