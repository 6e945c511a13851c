"""Speed ratios of the plugin, each measured within one run (numbers from different runs are never compared).

    python -m benchmarks.speed [--device cpu|cuda] [--quick] [--steps N] [--workdir DIR] [--results RESULTS.md]

Sets up its own workspace (phantom dataset -> plan/preprocess -> a short baseline -> a short generator; model quality is
irrelevant for timing) and prints:
1. train_step: mean time per training step of each trainer / nnUNetTrainer on the same plan and patch, with the
   FreeTumor step split into generator / gate / rest (the split is timed with device synchronisation);
2. DA worker: time per sample of the training transforms with the synthesis transform / without it;
3. gate on the tumor-centred crop vs the whole patch: cost ratio and how often the two accept/reject alike;
4. generator training: samples/s before (a fixed crop, large networks) and with the current defaults, with and
   without AMP (AMP only on CUDA), and where a step's time goes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DATASET_ID = 902
DATASET = "Dataset902_FreeTumorBench"
TRAINERS = [
    "nnUNetTrainer",
    "nnUNetTrainerHandcraftedTumor",
    "nnUNetTrainerHandcraftedTumor_gate",
    "nnUNetTrainerFreeTumor",
    "nnUNetTrainerFreeTumor_fullGate",
]


def sh(cmd: list, env: dict) -> None:
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], env=env, check=True, stdout=subprocess.DEVNULL)


def setup(work: Path, quick: bool, device: str) -> dict:
    env = dict(os.environ)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[k] = str(work / k)
        Path(env[k]).mkdir(parents=True, exist_ok=True)
    env.update(
        nnUNet_def_n_proc="2", nnUNet_freetumor_epochs="1", nnUNet_freetumor_iters="2", nnUNet_freetumor_val_iters="1"
    )
    if not (work / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json").is_file():
        shape = ["24", "48", "48"] if quick else ["32", "64", "64"]
        sh(
            [
                "freetumor_make_demo_dataset",
                "-d",
                DATASET_ID,
                "--name",
                "FreeTumorBench",
                "--n_train",
                8,
                "--n_test",
                2,
                "--shape",
                *shape,
                "--overwrite",
            ],
            env,
        )
        sh(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", 2, "-npfp", 2], env)
        sh(
            [
                "freetumor_config",
                "-d",
                DATASET_ID,
                "--gate_trainer",
                "nnUNetTrainerBaseline",
                "--p_synthesis",
                "1",
                "--write",
            ],
            env,
        )
    res = work / "nnUNet_results" / DATASET
    if not (res / "nnUNetTrainerBaseline__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth").is_file():
        sh(
            ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerBaseline", "-device", "cpu"],
            {**env, "nnUNet_n_proc_DA": "0"},
        )
    from nnunet_freetumor.generator.checkpoint import generator_folder

    gen = generator_folder(work / "nnUNet_results", DATASET, "nnUNetPlans", "3d_fullres", 0)
    if not (gen / "generator_final.safetensors").is_file():
        feats = ["8", "16", "32"] if quick else ["32", "64", "128", "256", "320"]
        # the generator's crop is half the patch per axis, as on real data where the patch (e.g. 128^3) is larger
        # than the generator's 96^3 crop: otherwise crop and patch coincide and the gate-crop comparison is empty
        plans = json.loads((work / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json").read_text())
        crop = [max(8, p // 2) for p in plans["configurations"]["3d_fullres"]["patch_size"]]
        cmd = [
            "freetumor_train_generator",
            DATASET_ID,
            "--steps",
            1,
            "--monitor_n",
            4,
            "--batch_size",
            2,
            "--gen_features",
            *feats,
            "--crop_size",
            *crop,
            "--device",
            "cpu",
            "--num_workers",
            0,
        ]
        sh(cmd, env)
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timed:
    """Calls of a callable (and attribute access) passed through, their synchronised wall time added to ``total``."""

    def __init__(self, fn, device: torch.device, total: dict, key: str):
        self._fn, self._device, self._total, self._key = fn, device, total, key

    def __call__(self, *a, **kw):
        sync(self._device)
        t = time.perf_counter()
        out = self._fn(*a, **kw)
        sync(self._device)
        self._total[self._key] = self._total.get(self._key, 0.0) + time.perf_counter() - t
        return out

    def __getattr__(self, name):
        return getattr(self._fn, name)


class Timer:
    """Accumulates synchronised wall time of wrapped methods (``Timed`` set in their place)."""

    def __init__(self, device: torch.device):
        self.device, self.total = device, {}

    def wrap(self, obj, name: str, key: str) -> None:
        setattr(obj, name, Timed(getattr(obj, name), self.device, self.total, key))


def in_turn(items: Sequence, i: int) -> list:
    """Round ``i``'s order: ``items`` rotated to start with item ``i mod len``, so that every item is timed first
    equally often (a machine that speeds up or slows down during the run weighs on all alike)."""
    k = i % len(items)
    return list(items[k:]) + list(items[:k])


def make_trainer(name: str, device: torch.device, dataset_id: int = DATASET_ID, seed: int = 0):
    """A trainer ready to step, its data loader seeded (no DA workers): a trainer draws the same batches in every run,
    so two runs' step times differ by the machine, not by what the trainers were given. (Different trainers still
    draw different cases: the plugin trainers use the random stream while they initialize.)"""
    import random

    from nnunetv2.run.run_training import get_trainer_from_args

    os.environ["nnUNet_n_proc_DA"] = "0"
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tr = get_trainer_from_args(str(dataset_id), "3d_fullres", 0, name, "nnUNetPlans", device=device)
    tr.disable_checkpointing = True
    tr.on_train_start()
    tr.on_train_epoch_start()
    return tr


def bench_train_step(device: torch.device, steps: int) -> dict:
    """Pre-drawn batches, the same for a trainer in every run (seeded, ``make_trainer``; candidates everywhere:
    p_synthesis = 1).
    The trainers take turns, one step each per round, each round starting with the next trainer, so a machine that
    speeds up or slows down during the run (a shared VM) and a trainer's place in the round weigh on all alike."""
    trainers, batches, timers, seconds = {}, {}, {}, {}
    for name in TRAINERS:
        tr = trainers[name] = make_trainer(name, device)
        batches[name] = [next(tr.dataloader_train) for _ in range(steps + 1)]
        timer = timers[name] = Timer(device)
        if hasattr(tr, "synthesize_crops"):
            timer.wrap(tr, "synthesize_crops", "generator" if "FreeTumor" in name else "synthesis")
            if getattr(tr, "gate_model", None) is not None:
                timer.wrap(tr, "gate_model", "gate")
        tr.train_step(batches[name][0])  # warm-up (allocations, cudnn autotune)
        timer.total.clear()
        seconds[name] = 0.0
    for i in range(1, steps + 1):
        for name in in_turn(TRAINERS, i):
            tr = trainers[name]
            sync(device)
            t = time.perf_counter()
            tr.train_step(batches[name][i])
            sync(device)
            seconds[name] += time.perf_counter() - t
    out = {
        name: {"step_s": seconds[name] / steps, **{k: v / steps for k, v in timers[name].total.items()}}
        for name in TRAINERS
    }
    del trainers, batches, timers  # five trainers' networks and batches: free them before the next benchmark
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def bench_da_workers(samples: int) -> dict:
    """Per-sample cost of the training transforms: vanilla vs with the synthesis transform (mask / handcrafted), each
    pipeline warmed up with one untimed sample, then all three taking turns on the same crops."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_freetumor.training.transform import TumorSynthesisTransform, insert_after_spatial

    tr = make_trainer("nnUNetTrainerHandcraftedTumor", torch.device("cpu"))
    dl = tr.dataloader_train.data_loader if hasattr(tr.dataloader_train, "data_loader") else tr.dataloader_train
    loader = dl.data_loader if hasattr(dl, "data_loader") else dl
    keys = loader.indices[:4]
    crops = []
    for k in keys:
        data, seg, _, props = loader._data.load_case(k)
        crops.append(
            (torch.from_numpy(np.asarray(data[:])).float(), torch.from_numpy(np.asarray(seg[:])).to(torch.int16))
        )
    args = tr.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    ds = tr._get_deep_supervision_scales()
    patch = tr.configuration_manager.patch_size
    modes, pipes = ("vanilla", "mask", "handcrafted"), {}
    for mode in modes:
        pipe = pipes[mode] = nnUNetTrainer.get_training_transforms(patch, args[0], ds, args[3], args[1])
        if mode != "vanilla":
            insert_after_spatial(
                pipe.transforms,
                TumorSynthesisTransform(
                    tr.freetumor_config, tr.configuration_manager.spacing, mode == "handcrafted", tr.normalizations
                ),
            )
        pipe(image=crops[0][0].clone(), segmentation=crops[0][1].clone())  # warm-up, untimed
    # the pipelines take turns, sample by sample (in_turn, as the trainers do in bench_train_step): the first pipeline
    # timed no longer pays the process's warm-up alone; each sample's random stream is seeded alike for all three, so
    # their spatial transforms (the costly part) draw the same
    seconds = dict.fromkeys(modes, 0.0)
    for i in range(samples):
        img, seg = crops[i % len(crops)]
        for mode in in_turn(modes, i):
            np.random.seed(i)
            torch.manual_seed(i)
            t = time.perf_counter()
            pipes[mode](image=img.clone(), segmentation=seg.clone())
            seconds[mode] += time.perf_counter() - t
    return {mode: seconds[mode] / samples for mode in modes}


def bench_gate(
    device: torch.device, n: int, dataset_id: int = DATASET_ID, min_accepted: int = 0, max_tumors: int = 100000
) -> dict:
    """Gate decisions and cost on the same synthetic tumors: tumor-centred crop vs whole patch. At least ``n``
    tumors, and (up to ``max_tumors``) until the patch gate accepted ``min_accepted``."""
    from nnunet_freetumor.training import trainer_base

    tr = make_trainer("nnUNetTrainerFreeTumor", device, dataset_id)
    agree, total, t_crop, t_full, acc_crop, acc_full, p_diff = 0, 0, 0.0, 0.0, 0, 0, 0.0
    both_acc, both_rej = 0, 0
    cfg = tr.freetumor_config
    while (total < n or acc_full < min_accepted) and total < max_tumors:
        batch = next(tr.dataloader_train)
        p = {}
        np_state, torch_state = np.random.get_state(), torch.get_rng_state()
        for bbox in (True, False):
            tr.freetumor_config = cfg.replace(gate_bbox_crop=bbox)
            captured = {"t": 0.0}
            gate, step = tr.gate_model, trainer_base.synthesize_and_gate

            def timed_gate(x, _gate=gate, _c=captured):  # S's forward on what it judges (the box or the patch)
                sync(device)
                t = time.perf_counter()
                out = _gate(x)
                sync(device)
                _c["t"] += time.perf_counter() - t
                return out

            def spy(*a, _step=step, _c=captured, **kw):  # the decisions: the pipeline's P per tumor
                gated = _step(*a, **kw)
                _c["p"] = gated.p
                return gated

            tr.gate_model = timed_gate
            trainer_base.synthesize_and_gate = spy
            np.random.set_state(np_state)  # both gates judge the same synthetic tumors (same sigmas, same G input)
            torch.set_rng_state(torch_state)
            try:
                tr.synthesize_batch(
                    {
                        k: (v.clone() if torch.is_tensor(v) else [x.clone() for x in v] if isinstance(v, list) else v)
                        for k, v in batch.items()
                    }
                )
            finally:
                tr.gate_model, trainer_base.synthesize_and_gate = gate, step
            if "p" in captured:
                p[bbox] = captured["p"].cpu()
                if bbox:
                    t_crop += captured["t"]
                else:
                    t_full += captured["t"]
        if len(p) == 2:
            a = p[True] >= cfg.gate_threshold
            b = p[False] >= cfg.gate_threshold
            agree += int((a == b).sum())
            both_acc, both_rej = both_acc + int((a & b).sum()), both_rej + int((~a & ~b).sum())
            acc_crop, acc_full = acc_crop + int(a.sum()), acc_full + int(b.sum())
            p_diff += float((p[True] - p[False]).abs().sum())
            total += len(a)
    tr.freetumor_config = cfg
    return {
        "n": total,
        "agreement": agree / max(total, 1),
        "accepted_crop": acc_crop,
        "accepted_full": acc_full,
        # of the tumors the patch gate accepts (rejects), the share the crop gate accepts (rejects) too
        "agree_on_accepted": both_acc / max(acc_full, 1),
        "agree_on_rejected": both_rej / max(total - acc_full, 1),
        "mean_abs_p_difference": p_diff / max(total, 1),
        "cost_ratio_crop_vs_full": t_crop / max(t_full, 1e-9),
    }


# What freetumor_train_generator did before the tumor-centred boxes (its defaults then; this script ran batch 2):
# a fixed crop of the patch (at most 96 per axis), G 32-320 and C 16-128, the paper's L_seg, a random initialisation,
# G seeing the image only.
BEFORE = dict(
    crop="patch",
    gen_features=(32, 64, 128, 256, 320),
    disc_features=(16, 32, 64, 128),
    seg_loss="paper",
    init="random",
    mask_input=False,
    batch_size=2,
    lr=1e-4,
)


CONVOLUTIONS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
TRANSPOSED = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


def conv_flops(network: torch.nn.Module, forward) -> int:
    """Floating-point operations (multiply and add counted apart) of ``network``'s convolutions and transposed
    convolutions while ``forward()`` runs (the rest of a U-Net, norms and nonlinearities, is a few percent)."""
    total = [0]

    def count(m, inputs, output):
        k = m.weight.shape  # conv: (out, in/groups, *kernel); transposed: (in, out/groups, *kernel)
        # a convolution's output voxel gathers in/groups x kernel products; a transposed one's input voxel spreads
        # over out/groups x kernel
        voxels = output.numel() if isinstance(m, CONVOLUTIONS) else inputs[0].numel()
        total[0] += 2 * voxels * int(np.prod(k[1:]))

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, CONVOLUTIONS + TRANSPOSED)]
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """What this device does in fp32 on a large matrix product (GFLOP/s): the ceiling for convolutions."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def s_alone(segmenter, boxes: list[torch.Tensor], to, device: torch.device, autocast) -> dict:
    """The frozen S's forward + backward to its input (what L_seg costs, nothing else) on the boxes of the timed
    steps, moved to the device as training moves them (``to``): seconds per step and GFLOP/s (S's convolution FLOPs,
    the backward counted as one more forward: it computes input gradients only, S's weights are frozen; the time also
    holds the norms and nonlinearities, so this errs low), and an fp32 matrix product timed right after, the same
    moment's reference."""
    flops, forward, backward = 0, 0.0, 0.0
    for box in boxes:
        x = to(box).detach()
        flops += 2 * conv_flops(segmenter.network, lambda x=x: segmenter(x))  # untimed; also a warm-up
        x.requires_grad_(True)
        sync(device)
        t0 = time.perf_counter()
        with autocast():
            logits = segmenter(x)
        sync(device)
        t1 = time.perf_counter()
        logits.float().sum().backward()
        sync(device)
        forward, backward = forward + t1 - t0, backward + time.perf_counter() - t1
    return {
        "s_alone_step_s": (forward + backward) / len(boxes),
        "s_alone_forward_s": forward / len(boxes),
        "s_alone_backward_s": backward / len(boxes),
        "s_gflops": flops / (forward + backward) / 1e9,
        "matmul_gflops": matmul_gflops(device),
    }


def bench_generator(device: torch.device, steps: int) -> dict:
    """Generator training samples/s, before (``BEFORE``) vs the current defaults, on the same dataset and plan, with
    where a step's time goes: data (drawing the samples, cutting the boxes), forward passes of G, S and C, and the
    rest (the backward passes through G, S and C, and the optimizers)."""
    from nnunet_freetumor.generator.args import GeneratorTrainingArgs
    from nnunet_freetumor.generator.train import GeneratorTrainer

    out = {}
    for name, kw, n in (("before", BEFORE, steps), ("defaults", {}, 4 * steps)):
        for amp in [False, True] if device.type == "cuda" else [False]:
            args = GeneratorTrainingArgs(
                dataset=str(DATASET_ID), steps=n + 1, device=device.type, num_workers=0, amp=amp, **kw
            )
            g = GeneratorTrainer(args, os.environ["nnUNet_results"], os.environ["nnUNet_preprocessed"])
            total: dict[str, float] = {}
            loader = iter(g.loader())
            g.step(next(loader))  # warm-up
            collate = g.collate  # untimed: counts the boxes' voxels
            g.synthesize_box = Timed(g.synthesize_box, device, total, "G forward")
            g._c_logits = Timed(g._c_logits, device, total, "C forward")
            g.setup.segmenter = Timed(g.setup.segmenter, device, total, "S forward")
            g.collate = Timed(g.collate, device, total, "data")
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            boxes, t_all = [], 0.0
            for _ in range(n):
                t = time.perf_counter()
                samples = next(loader)
                total["data"] = total.get("data", 0.0) + time.perf_counter() - t
                g.step(samples)
                t_all += time.perf_counter() - t
                boxes.append(collate(samples)["fake_image"])
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            key = f"{name}{' amp' if amp else ''}"
            parts = {k: v / n for k, v in total.items()}
            step_s = t_all / n
            parts["backward + optimizers"] = step_s - sum(parts.values())
            alone = s_alone(g.setup.segmenter._fn, boxes, g._to, device, g.autocast)
            out[key] = {
                "samples_per_s": args.batch_size / step_s,
                "step_s": step_s,
                "batch_size": args.batch_size,
                "mean_box_voxels": float(np.mean([np.prod(b.shape[2:]) for b in boxes])),
                "peak_gib": peak,
                "parts_s": parts,
                **alone,
                "s_bound_samples_per_s": args.batch_size / alone["s_alone_step_s"],
            }
    return out


def generator_table(gen: dict) -> list[str]:
    """The generator-training table: before vs the defaults, samples/s and where a step's time goes; then what the
    frozen S alone costs on the same boxes, the bound it sets on samples/s, and S's speed beside an fp32 matrix
    product's."""
    before = gen["before"]["samples_per_s"]
    part_names = list(gen["defaults"]["parts_s"])
    lines = [
        "",
        "Generator training, the same dataset and plan: before = a fixed crop of the patch, G 32-320, C 16-128, "
        "batch 2 (the earlier defaults); defaults = tumor-centred boxes (mask + the gate's margin), G 16-128, C 8-32, "
        "batch 4, one tumor size class per step. Per step: "
        + ", ".join(part_names)
        + " (forward passes timed with device synchronisation; the rest is backward passes and optimizer steps).",
        "",
        "| generator training | samples/s | ratio vs before | s / step (batch) | mean box voxels | "
        + " | ".join(f"{p} [s]" for p in part_names)
        + " | peak GPU memory [GiB] |",
        "|---|---|---|---|---|" + "---|" * len(part_names) + "---|",
    ]
    for k, v in gen.items():
        lines.append(
            f"| {k} | {v['samples_per_s']:.2f} | {v['samples_per_s'] / before:.1f} | {v['step_s']:.2f} "
            f"({v['batch_size']}) | {v['mean_box_voxels']:.0f} | "
            + " | ".join(f"{v['parts_s'].get(p, 0.0):.2f}" for p in part_names)
            + f" | {v['peak_gib']:.2f} |"
        )
    lines += [
        "",
        "What S alone costs: the frozen S's forward + backward to its input (L_seg's share of a step, nothing else) "
        "on the same steps' boxes, timed apart. Were G, C, the data and the optimizers free, a step could not be "
        "faster than that: the bound on samples/s (for this dataset's boxes). S's speed is its convolutions' FLOPs "
        "(the backward counted as one more forward: input gradients only) per second, beside an fp32 matrix product "
        "(2048 x 2048) timed right after on the same device (rows with AMP compare half-precision convolutions with "
        "it).",
        "",
        "| generator training | S forward + backward alone [s / step] | of which backward [s] | share of the step | "
        "bound: samples/s (ratio vs before) | S [GFLOP/s] | matrix product [GFLOP/s] | S / matrix product |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, v in gen.items():
        lines.append(
            f"| {k} | {v['s_alone_step_s']:.2f} | {v['s_alone_backward_s']:.2f} | "
            f"{v['s_alone_step_s'] / v['step_s']:.0%} | "
            f"{v['s_bound_samples_per_s']:.2f} ({v['s_bound_samples_per_s'] / before:.1f}) | "
            f"{v['s_gflops']:.0f} | {v['matmul_gflops']:.0f} | {v['s_gflops'] / v['matmul_gflops']:.0%} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny images and networks (CI-sized)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per trainer [5, quick: 3]")
    ap.add_argument("--workdir", default=None, help="workspace (kept between runs) [a temporary folder]")
    ap.add_argument(
        "--results",
        default=None,
        help="write the tables as a section of this Markdown file "
        "(e.g. benchmarks/RESULTS.md; the section is replaced on every run)",
    )
    a = ap.parse_args()
    steps = a.steps or (3 if a.quick else 5)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="freetumor_speed_"))
    env = setup(work, a.quick, a.device)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    for k in ("nnUNet_freetumor_epochs", "nnUNet_freetumor_iters", "nnUNet_freetumor_val_iters"):
        os.environ.pop(k, None)
    device = torch.device(a.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    steps_res = bench_train_step(device, steps)
    base = steps_res["nnUNetTrainer"]["step_s"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, device {device}" + (
        f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""
    )
    title = f"## Speed ({'quick' if a.quick else 'default'} setting)"
    lines = [
        title,
        "",
        f"Generated by `python -m benchmarks.speed{' --quick' if a.quick else ''} --device {device.type}` on "
        f"{machine}; "
        f"torch {torch.__version__}. Every ratio compares numbers measured in this one run. Without a GPU in this "
        "environment, the CUDA numbers (and the <= 1.2x train_step target on GPU) are still to be measured.",
        "",
        "| trainer | train_step [s] | ratio vs nnUNetTrainer | generator / synthesis [s] | gate [s] |",
        "|---|---|---|---|---|",
    ]
    for name, r in steps_res.items():
        lines.append(
            f"| {name} | {r['step_s']:.3f} | {r['step_s'] / base:.2f} | "
            f"{r.get('generator', r.get('synthesis', 0)):.3f} | {r.get('gate', 0):.3f} |"
        )
    da = bench_da_workers(8 if a.quick else 20)
    lines += ["", "| DA worker pipeline | s / sample | ratio vs vanilla |", "|---|---|---|"]
    lines += [f"| {k} | {v:.4f} | {v / da['vanilla']:.2f} |" for k, v in da.items()]
    gate = bench_gate(device, 8 if a.quick else 24)
    lines += [
        "",
        f"Gate on the tumor-centred crop vs the whole patch: {gate['n']} synthetic tumors, decisions agree "
        f"{100 * gate['agreement']:.0f} % (accepted: {gate['accepted_crop']} on the crop, "
        f"{gate['accepted_full']} on the patch; a weak S accepts little, and agreement on rejections says less; "
        f"mean |P_crop - P_patch| {gate['mean_abs_p_difference']:.3f}), "
        f"cost ratio crop/full {gate['cost_ratio_crop_vs_full']:.2f}.",
    ]
    gen = bench_generator(device, steps)
    lines += generator_table(gen)
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    print(json.dumps({"train_step": steps_res, "da": da, "gate": gate, "generator": gen}, indent=1))
    if a.results:
        from benchmarks.common import write_section

        write_section(Path(a.results), text, title)


if __name__ == "__main__":
    sys.exit(main())
