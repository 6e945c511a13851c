"""Atomic writes: a crash or kill -9 during a write leaves the previous file intact and no stray temp files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nnunet_freetumor.utilities.files import atomic_save, atomic_write_text
from nnunet_freetumor.utilities.image_io import check_complete


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "checkpoint.bin"
    target.write_bytes(b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.bin"]


def test_new_files_get_normal_permissions(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_kill_9_during_a_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "checkpoint.bin"
    target.write_bytes(b"old")
    code = textwrap.dedent(f"""
        import time
        from nnunet_freetumor.utilities.files import atomic_save
        def slow(tmp):
            with open(tmp, "wb") as f:
                f.write(b"x" * 1000)
                f.flush()
                print("writing", flush=True)
                time.sleep(60)
        atomic_save({str(target)!r}, slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.1)
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_truncated_or_corrupt_images_that_simpleitk_reads_silently_are_detected(tmp_path, ending):
    import numpy as np
    import SimpleITK as sitk

    arr = np.random.default_rng(0).integers(-1000, 1000, (12, 32, 32)).astype(np.int16)
    path = tmp_path / f"img{ending}"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path), useCompression=ending.endswith(".gz"))
    check_complete(path)  # intact
    data = path.read_bytes()
    cut = tmp_path / f"cut{ending}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(cut))).shape == arr.shape  # the hazard: no reader error
    with pytest.raises(ValueError, match="truncated"):
        check_complete(cut)
    if ending.endswith(".gz"):
        bad = tmp_path / f"bad{ending}"
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF  # one corrupted byte in the deflate stream
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="truncated or corrupt"):
            check_complete(bad)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    check_complete(other)  # formats without a check pass through
