"""The benchmark scripts' bookkeeping (their runs themselves are hours; `compare.py --quick` is the smoke run)."""

import json
import os

import numpy as np
import pytest

from benchmarks.common import claim_workdir, format_p, mean_sd, write_section
from benchmarks.compare import PRESETS, orderings_table


def test_a_work_folder_keeps_the_parameters_of_its_runs(tmp_path):
    work = tmp_path / "w"
    p = dict(PRESETS["quick"])
    claim_workdir(work, p, "cpu")
    assert json.loads((work / "params.json").read_text())["epochs"] == p["epochs"]
    claim_workdir(work, {**p, "seeds": 5}, "cpu")  # more seeds reuse the finished ones
    with pytest.raises(SystemExit, match=r"gen_steps: 2 there, 20 now.*new --workdir"):
        claim_workdir(work, {**p, "gen_steps": 20}, "cpu")
    with pytest.raises(SystemExit, match=r"device: cpu there, cuda now"):
        claim_workdir(work, p, "cuda")
    assert json.loads((work / "params.json").read_text())["gen_steps"] == 2  # a refused run records nothing


def test_mean_sd_over_the_seeds_that_have_a_value():
    assert mean_sd([0.5, None, 0.7]) == "0.600 ± 0.141"
    assert mean_sd([0.25]) == "0.250" and mean_sd([None]) == "n/a"


def test_small_p_values_are_not_printed_as_zero():
    assert format_p(0.0004) == "< 0.001" and format_p(0.0312) == "0.031"


def test_a_report_replaces_its_own_section_or_the_one_it_supersedes(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\n## Comparison (p, core rows)\n\nold core\n\n## Realism (p)\n\nkept\n")
    write_section(
        md, "## Comparison (p)\n\nall rows\n", "## Comparison (p)", supersedes=("## Comparison (p, core rows)\n",)
    )
    text = md.read_text()
    assert "old core" not in text and text.index("all rows") < text.index("## Realism (p)") and "kept" in text
    write_section(md, "## Comparison (p)\n\nall rows, again\n", "## Comparison (p)")
    assert md.read_text().count("## Comparison") == 1 and "again" in md.read_text()
    write_section(md, "## Comparison (q, core rows)\n\nnew\n", "## Comparison (q, core rows)")
    assert md.read_text().rstrip().endswith("new")  # another preset: appended


def test_the_paper_orderings_are_checked_on_the_means_and_seed_by_seed():
    def row(*dice):
        return [{"dice_tumor": d, "small_lesion_sensitivity": None} for d in dice]

    results = {
        "baseline": row(0.5, 0.6, 0.7),
        "FreeTumor (T=0.7)": row(0.6, 0.5, 0.8),  # mean above the baseline's, in 2 of 3 seeds
        "FreeTumor no gate": row(0.7, 0.7, 0.7),  # above the gated row's mean
    }
    lines = {line.split(" | ")[0].lstrip("| "): line for line in orderings_table(results) if line.startswith("| ")}
    assert lines["synthesis helps"].endswith("| 0.633, 0.600 | yes | 2/3 |")
    assert lines["the gate helps"].endswith("| no | 1/3 |")
    assert lines["synthesis finds more small lesions"].endswith("| n/a, n/a | no | 0/3 |")
    assert "T = 0.7 is the best threshold" not in lines  # its rows were not run
    assert orderings_table({"baseline": row(0.5)}) == []


def test_the_loss_ablation_reading_names_the_generator_that_paints_the_wrong_contrast():
    from benchmarks.phantom_realism import loss_ablation_reading, report

    def lesions(contrast):
        cols = ("diameter_mm", "mean_hu", "sd_hu", "ring_organ_hu", "edge_width_mm")
        return [{"contrast_hu": c, "gate_p": 0.8, **dict.fromkeys(cols, 1.0)} for c in contrast]

    def curve(*loss_seg):
        return [{"loss_seg": v, "gate_accept": 0.0} for v in loss_seg]

    measures = {
        "real": lesions([-40, -42]),
        "generator": lesions([-30, -34]),
        "handcrafted": lesions([-41]),
        "G: L_cls only": lesions([120, 80]),
    }
    fd = {"frechet_distance": 1.0, "reference_fd": [], "n_real": 2, "n_synthetic": 2, "n_features": 4}
    per_seed = {0: {"measures": measures, "frechet": {"generator": fd}, "threshold": 0.7}}
    curves = {0: {"both": curve(0.4, 0.5), "cls": curve(0.43, 0.93)}}
    (text,) = [s for s in loss_ablation_reading(per_seed, curves) if s]
    assert "both losses -32 HU, L_cls only 100 HU" in text
    assert "the L_cls only generator's tumors are brighter than the organ, the real lesions darker" in text
    assert text.endswith("L_seg over training: both losses 0.40 → 0.50, L_cls only 0.43 → 0.93.")
    measures["G: L_cls only"] = lesions([-10])
    (text,) = [s for s in loss_ablation_reading(per_seed, curves) if s]
    assert "every generator paints tumors on the real lesions' side" in text
    assert "contrast as a share of the real lesions': both losses 0.78, L_cls only 0.24." in text
    del measures["G: L_cls only"]  # a seed without the ablation's generators: no sentence
    assert loss_ablation_reading(per_seed, curves) == []
    table = report(per_seed, curves, {0: 0.6}, "cmd", 2)
    assert "| 0 | 0.600 | L_cls only | 0.430 → 0.930 | 0.00 → 0.00 | 0 / 2 |" in table


def test_a_seeds_realism_is_reused_only_while_its_exports_and_s_are_unchanged(tmp_path, monkeypatch):
    from benchmarks import phantom_realism
    from benchmarks.compare import Comparison

    c = Comparison(tmp_path / "w", dict(PRESETS["quick"]), "cpu")
    s = c.fold(0, "both", "nnUNetTrainerBaseline")
    s.mkdir(parents=True)
    (s / "checkpoint_final.pth").write_text("S")
    export = tmp_path / "export"
    export.mkdir()
    (export / "synthesis_log.json").write_text("{}")
    runs = []
    monkeypatch.setattr(phantom_realism, "analyse", lambda c, seed, exports: runs.append(seed) or {"measures": {}})

    first = phantom_realism.cached_analyse(c, 0, {"generator": export}, {})
    cache = json.loads(json.dumps({"0": first}))  # as phantom_realism.json holds it
    assert phantom_realism.cached_analyse(c, 0, {"generator": export}, cache) == first and runs == [0]
    assert phantom_realism.cached_analyse(c, 0, {"generator": export, "handcrafted": export}, cache) and runs == [0, 0]
    (s / "checkpoint_final.pth").write_text("a retrained S")
    os.utime(s / "checkpoint_final.pth", ns=(1, 1))
    phantom_realism.cached_analyse(c, 0, {"generator": export}, cache)
    assert runs == [0, 0, 0]


def test_convergence_targets_and_the_time_budget_point():
    from benchmarks.generator_convergence import targets, within_budget

    n = {"synthetic_contrast_hu": -35.0, "real_contrast_hu": -42.0, "synthetic_accept": 0.5, "fd": 0.05}
    n.update(fd_ref_lo=0.04, fd_ref_hi=0.06)
    assert targets(n) == {"contrast": True, "accept": True, "fd": True}
    assert targets({**n, "synthetic_contrast_hu": -30.0})["contrast"] is False  # 29 % short of the real median
    assert targets({**n, "synthetic_contrast_hu": 40.0})["contrast"] is False  # the wrong sign
    assert targets({**n, "synthetic_contrast_hu": 0.0})["contrast"] is False
    assert targets({**n, "synthetic_accept": 0.49})["accept"] is False
    assert targets({**n, "fd": 0.03})["fd"] is True  # below the band: closer than two samples of one distribution
    assert targets({**n, "fd": 0.07})["fd"] is False
    history = [{"step": 0, "time_s": 0, "monitor_s": 20}] + [
        {"step": 50 * k, "time_s": 600, "monitor_s": 20} for k in range(1, 5)
    ]
    best = within_budget(history, 30)  # 20 s, then 620 s per point: steps 50 and 100 fit in 30 min, 150 does not
    assert best["step"] == 100 and best["minutes"] == pytest.approx((20 + 2 * 620) / 60)
    assert within_budget(history, 0.1)["step"] == 0


def test_the_comparison_trains_the_generator_with_its_defaults_and_resumes_it(tmp_path, monkeypatch):
    from benchmarks import compare

    calls = []
    monkeypatch.setattr(compare, "sh", lambda cmd, env, log: calls.append([str(x) for x in cmd]))
    c = compare.Comparison(tmp_path, dict(PRESETS["cpu-small"]), "cpu", *compare.dataset_of("hyperdense"))
    assert (c.dataset_id, c.ds) == (913, "Dataset913_FreeTumorCompareHyperdense")
    c.generator(1, "seg")
    cmd = " ".join(calls[-1])
    assert cmd.startswith("freetumor_train_generator 913 -f 0 --steps 450 --losses seg --seed 1")
    assert "--gen_features" not in cmd and "--batch_size" not in cmd  # the defaults, not the old small networks
    assert "--monitor_every 50 --monitor_n 32" in cmd and "--c" not in calls[-1]
    folder = c.generator_folder(1, "seg")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint_latest.safetensors").write_text("x")
    c.generator(1, "seg")
    assert calls[-1][-1] == "--c"
    (folder / "generator_final.safetensors").write_text("x")
    c.generator(1, "seg")
    assert len(calls) == 2  # a finished generator is reused


def test_each_row_is_read_against_the_tumors_it_trained_on():
    from benchmarks.compare import realism_table

    point = {"synthetic_contrast_hu": -30.0, "real_contrast_hu": -40.0, "synthetic_accept": 0.5, "real_accept": 0.8}
    other = {**point, "synthetic_contrast_hu": -34.0, "synthetic_accept": 0.7}
    lines = realism_table({"baseline": [None, None], "FreeTumor (T=0.7)": [point, other]})
    assert "| baseline | - | - |" in lines
    assert "| FreeTumor (T=0.7) | -32.0 ± 2.8 / -40.0 ± 0.0 | 0.60 ± 0.14 / 0.80 ± 0.00 |" in lines
    assert realism_table({}) == []


def test_variant_spec_reads_an_optional_appearance():
    import argparse

    from benchmarks.generator_convergence import variant_spec

    assert variant_spec("paper") == (None, "paper")
    assert variant_spec("hyperdense:cls") == ("hyperdense", "cls")
    for bad in ("hyper:cls", "hypodense:nonsense", "nonsense"):
        with pytest.raises(argparse.ArgumentTypeError, match="APPEARANCE"):
            variant_spec(bad)


def test_a_convergence_run_on_fewer_appearances_or_with_another_s_writes_its_own_section_and_plot():
    from benchmarks.generator_convergence import APPEARANCES, plot_name, section_name

    assert section_name("cpu", list(APPEARANCES)) == "Generator convergence (cpu)"
    assert plot_name("cpu", list(APPEARANCES)) == "generator_convergence_cpu.png"
    assert section_name("cpu", ["heterogeneous"]) == "Generator convergence (cpu, heterogeneous)"
    assert plot_name("cpu", ["hypodense", "heterogeneous"]) == "generator_convergence_cpu_hypodense_heterogeneous.png"
    # another S writes beside the preset's S, not over it
    assert section_name("cpu", ["hyperdense"], 160) == "Generator convergence (cpu, hyperdense, S 160 epochs)"
    assert plot_name("cpu", ["hyperdense"], 160) == "generator_convergence_cpu_hyperdense_s160.png"


def test_another_s_changes_the_run_s_schedule_and_its_command_but_not_the_preset():
    from argparse import Namespace

    from benchmarks.generator_convergence import APPEARANCES, PRESETS, run_parameters

    a = Namespace(preset="cpu", seeds=None, lesions=list(APPEARANCES), s_epochs=PRESETS["cpu"]["epochs"])
    assert run_parameters(a) == (PRESETS["cpu"], "", None)  # the preset's own S: the preset's section
    p, flags, s_epochs = run_parameters(Namespace(preset="cpu", seeds=1, lesions=["hyperdense"], s_epochs=160))
    assert (p["epochs"], p["seeds"], s_epochs) == (160, 1, 160)
    assert flags == " --seeds 1 --lesions hyperdense --s_epochs 160"
    assert PRESETS["cpu"]["epochs"] == 80


def test_the_phantom_recipe_on_a_mask_replaces_the_organ_or_adds_to_it_and_paints_a_core_only_when_asked():
    from benchmarks.monitor import paint_phantom_lesion

    spacing = (1.5, 1.5, 1.5)
    grid = np.meshgrid(*[np.arange(32)] * 3, indexing="ij")
    mask = sum((g - 16.0) ** 2 for g in grid) <= 8.0**2  # 24 mm across: a core and a rim
    hu = np.full((32, 32, 32), 110.0, dtype=np.float32)
    hu[:, 15:17, 15:17] = 180.0  # a vessel through the lesion
    vessel = np.zeros_like(mask)
    vessel[:, 15:17, 15:17] = True
    deep = mask & (sum((g - 16.0) ** 2 for g in grid) <= 3.0**2)
    rim = mask & (sum((g - 16.0) ** 2 for g in grid) >= 6.0**2)
    rng = np.random.default_rng(0)
    replaced = paint_phantom_lesion(hu, mask, spacing, "heterogeneous", "replaced", rng)
    added = paint_phantom_lesion(hu, mask, spacing, "heterogeneous", "added", rng)
    rim_only = paint_phantom_lesion(hu, mask, spacing, "heterogeneous", "rim only", rng)
    for img in (replaced, added, rim_only):
        assert np.median(img[mask & ~vessel]) < 110.0 - 15.0  # darker than the organ
        assert np.allclose(img[:2], hu[:2])  # far from the lesion nothing changes
    core_drop = lambda img: np.median(img[deep & ~vessel]) - np.median(img[rim & ~vessel])  # noqa: E731
    assert core_drop(replaced) < -20.0 and core_drop(added) < -20.0 and abs(core_drop(rim_only)) < 15.0
    vessel_gap = lambda img: np.median(img[mask & vessel]) - np.median(img[mask & ~vessel])  # noqa: E731
    assert vessel_gap(added) > 50.0 and abs(vessel_gap(replaced)) < 25.0  # replaced: no vessel inside the lesion
    with pytest.raises(ValueError, match="how must be one of"):
        paint_phantom_lesion(hu, mask, spacing, "heterogeneous", "other", rng)


def test_the_convergence_tables_and_plot_take_variant_only_runs_and_the_recipe_rows(tmp_path):
    from benchmarks.generator_convergence import crops_table, plot, recipe_table, report, variants_table

    point = {
        "step": 50,
        "minutes": 3.0,
        "n_synthetic": 6,
        "n_real": 4,
        "synthetic_contrast_hu": -30.0,
        "real_contrast_hu": -35.0,
        "synthetic_accept": 0.5,
        "real_accept": 0.75,
        "synthetic_p": 0.6,
        "real_p": 0.8,
        "fd": 0.05,
        "fd_ref_lo": 0.04,
        "fd_ref_hi": 0.06,
    }
    run = {"history": [{**point, "step": 0}, point], "at_budget": point}
    p = dict(shape=(8, 8, 8), n_train=4, healthy=0.5, epochs=1, iters=1, steps=2, monitor_every=1, monitor_n=6)
    p.update(budget_min=30)
    unseen = {"heterogeneous": {"n_cases": 16, "n_lesions": 24, "contrast_hu": -33.0, "accept": 0.25, "p": 0.5}}
    text = report({"heterogeneous": {}}, p, "quick", "cpu", tmp_path / "x.png", 0.1, " --seeds 0", "T", unseen)
    assert "### heterogeneous" not in text  # no seed was run: no per-seed table
    seeds = {"heterogeneous": {0: {**run, "handcrafted": point}}}
    text = report(seeds, p, "quick", "cpu", tmp_path / "x.png", 0.1, "", "T", unseen)
    assert "| 0 | 50 | 3.0 | -30.0 / -35.0 | 0.50 / 0.75 / 0.25 |" in text  # synthetic / training / unseen lesions
    assert "| defaults |" not in variants_table(None, {"depth": run}, "heterogeneous")
    rows = {"replaced": {**point, "synthetic_accept": 0.7}, "added": point, "handcrafted": point}
    table = recipe_table({"heterogeneous": rows}, unseen)
    assert "| heterogeneous: real lesions (training split) | 4 | -35.0 | 0.75 | 0.80 | - |" in table
    assert (
        "| heterogeneous: real lesions S never saw (16 new cases of the phantom, seed 1) | 24 | -33.0 | 0.25 |" in table
    )
    assert "the organ replaced by the lesion" in table and "0.70" in table and "handcrafted recipe" in table
    curves = {"heterogeneous": {"depth (seed 0)": run, "seed 0": {**run, "handcrafted": point}}}
    plot(curves, tmp_path / "c.png", unseen)
    margins = {"12": {"p": [0.2, 0.9], "voxels_mean": 3000.0, "accept": 0.5, "agree": 0.5}}
    margins["24"] = {"p": [0.8, 0.9], "voxels_mean": 9000.0, "accept": 1.0, "agree": 1.0}
    crops = {"n": 2, "p_box": [0.8, 0.9], "p_patch": [0.8, 0.9], "box_shape_mean_voxels": 9000.0, "patch_voxels": 20000}
    crops.update(agree=1.0, accept_box=1.0, accept_patch=1.0, gate_margin_mm=24.0, margins=margins)
    table = crops_table({"heterogeneous": crops})
    assert "| heterogeneous | 12 | 3000 | 0.55 ± 0.35 | 0.50 | 50% |" in table
    assert "| heterogeneous | 24 (the gate's) | 9000 | 0.85 ± 0.05 | 1.00 | 100% |" in table
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_numbers_judged_by_s_are_reused_only_for_that_s(tmp_path):
    from benchmarks.monitor import cached_for_segmenter

    s = tmp_path / "checkpoint_final.pth"
    s.write_text("an S")
    calls = []

    def compute():
        calls.append(1)
        return {"synthetic_accept": 0.5 * len(calls)}

    cache = tmp_path / "numbers.json"
    assert cached_for_segmenter(cache, s, compute) == {"synthetic_accept": 0.5}
    assert cached_for_segmenter(cache, s, compute) == {"synthetic_accept": 0.5} and len(calls) == 1
    os.utime(s, ns=(1, 1))  # S retrained
    assert cached_for_segmenter(cache, s, compute) == {"synthetic_accept": 1.0} and len(calls) == 2
    # another setting (e.g. other margins, other unseen cases) is computed anew, the same one reused
    assert cached_for_segmenter(cache, s, compute, {"margins_mm": [8, 24]}) == {"synthetic_accept": 1.5}
    assert cached_for_segmenter(cache, s, compute, {"margins_mm": [8, 24]}) == {"synthetic_accept": 1.5}
    assert cached_for_segmenter(cache, s, compute, {"margins_mm": [12, 24]}) == {"synthetic_accept": 2.0}
    assert len(calls) == 4


def test_conv_flops_counts_multiplies_and_adds_of_convolutions_and_transposed_convolutions():
    import torch

    from benchmarks.speed import conv_flops

    conv = torch.nn.Conv3d(2, 3, 3, padding=1)  # 4^3 outputs x 3 channels, each 2 x 27 products
    up = torch.nn.ConvTranspose3d(3, 5, 2, stride=2)  # 4^3 inputs x 3 channels, each spread over 5 x 8 outputs
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), up)
    x = torch.zeros(1, 2, 4, 4, 4)
    assert conv_flops(net, lambda: net(x)) == 2 * (64 * 3 * 2 * 27 + 64 * 3 * 5 * 8)
    assert conv_flops(net, lambda: net(torch.zeros(2, 2, 4, 4, 4))) == 2 * conv_flops(net, lambda: net(x))
    assert not net[0]._forward_hooks  # the counters are removed
    # groups of 2: a conv output sees 2 of the 4 input channels, a transposed conv input feeds 2 of the 4 outputs
    grouped = torch.nn.Sequential(
        torch.nn.Conv3d(4, 6, 3, padding=1, groups=2), torch.nn.ConvTranspose3d(6, 4, 2, 2, groups=2)
    )
    x = torch.zeros(1, 4, 4, 4, 4)
    assert conv_flops(grouped, lambda: grouped(x)) == 2 * (64 * 6 * 2 * 27 + 64 * 6 * 2 * 8)


def test_timer_adds_each_wrapped_call_and_passes_results_and_attributes_through():
    import time

    import torch

    from benchmarks.speed import Timer

    class Part:
        scale = 3

        def run(self, x, pause=0.0):
            time.sleep(pause)
            return x * self.scale

    part, timer = Part(), Timer(torch.device("cpu"))
    timer.wrap(part, "run", "part")
    assert part.run(2, pause=0.02) == 6 and part.run(1) == 3
    assert 0.02 <= timer.total["part"] < 1.0
    assert part.run.__self__ is part  # attributes of the wrapped method still reach it
    timer.wrap(part, "run", "again")  # a second key counts apart from the first
    part.run(1, pause=0.01)
    assert timer.total["again"] >= 0.01 and set(timer.total) == {"part", "again"}


def test_in_turn_starts_each_round_with_the_next_item_and_keeps_them_all():
    from benchmarks.speed import in_turn

    items = ("a", "b", "c")
    assert [in_turn(items, i) for i in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert in_turn(["x"], 5) == ["x"]
