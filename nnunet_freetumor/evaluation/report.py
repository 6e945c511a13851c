"""The reports of an evaluation summary (``evaluate_folder``'s result): ``summary_freetumor.json`` and the Markdown
tables next to it, the short text ``freetumor_evaluate`` prints, and the headline numbers / comparison table of
several summaries (benchmarks, demo)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_freetumor.evaluation.lesions import safe_div
from nnunet_freetumor.utilities.text import fmt

SUMMARY_JSON = "summary_freetumor.json"
SUMMARY_MD = "summary_freetumor.md"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return out


def _section(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A blank line, the ``## title`` heading, a blank line and the table."""
    return ["", f"## {title}", ""] + _table(header, rows)


def _md_settings(summary: dict[str, Any]) -> list[str]:
    """The report's title and what was evaluated how: folders, cases (and those skipped), tumor classes, rules."""
    s, cases = summary["settings"], summary["cases"]
    lines = [
        "# FreeTumor evaluation",
        "",
        f"- predictions: `{s['pred_folder']}`",
        f"- ground truth: `{s['gt_folder']}`",
        f"- cases evaluated: {cases['n_evaluated']}",
    ]
    if cases["gt_without_prediction"] or cases["prediction_without_gt"]:
        lines.append(
            f"- **--allow_missing: skipped** {len(cases['gt_without_prediction'])} GT case(s) without prediction, "
            f"{len(cases['prediction_without_gt'])} prediction(s) without GT"
        )
    return lines + [
        f"- tumor classes: {', '.join(f'{v} ({k})' for k, v in s['tumor_labels'].items())}",
        f"- lesions: {s['connectivity']}-connected components; detected / true positive with >= "
        f"{s['min_overlap_voxels']} overlapping voxel(s)",
        f"- {s['diameter']}",
    ]


def _md_lesion_rows(summary: dict[str, Any]) -> list[tuple]:
    """One row per tumor class: the pooled lesion counts and metrics."""
    return [
        (
            v["name"],
            v["n_gt_lesions"],
            v["n_detected"],
            fmt(v["sensitivity"]),
            v["n_pred_lesions"],
            v["n_tp_pred"],
            v["n_fp_pred"],
            fmt(v["precision"]),
            fmt(v["f1"]),
            fmt(v["fp_lesions_per_case"], 2),
        )
        for v in summary["lesion"].values()
    ]


def _md_patient_row(pl: dict[str, Any]) -> tuple:
    """The patient-level counts, sensitivity and specificity."""
    return (
        pl["n_cases"],
        pl["n_gt_positive"],
        pl["n_gt_negative"],
        pl["tp"],
        pl["fn"],
        pl["fp"],
        pl["tn"],
        fmt(pl["sensitivity"]),
        fmt(pl["specificity"]),
    )


def _md_per_case(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-case table: Dice of every class, any tumor in GT / prediction, and per tumor class
    detected / GT lesions and false-positive lesions."""
    mean = summary["dice"]["mean"]
    dice_keys = list(mean)
    tumor_keys = list(summary["lesion"])
    header = ["case"] + [f"Dice {mean[k]['name']}" for k in dice_keys] + ["GT tumor", "pred. tumor"]
    header += [f"{summary['lesion'][k]['name']}: detected/GT, FP" for k in tumor_keys]
    rows = []
    for c in summary["per_case"]:
        row = [c["case_id"]] + [fmt(c["metrics"][k]["Dice"], 4) for k in dice_keys]
        row += [fmt(c["gt_tumor"]), fmt(c["pred_tumor"])]
        for k in tumor_keys:
            r = c["lesions"][k]
            row.append(f"{r['n_detected']}/{r['n_gt_lesions']}, {r['n_fp_pred']}")
        rows.append(row)
    return header, rows


def format_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables (Dice, lesion detection, size strata, patient level, per case)."""
    mean = summary["dice"]["mean"]
    lines = _md_settings(summary)
    lines += _section(
        "Dice (nnU-Net, mean over cases)",
        ["class", "label", "Dice", "IoU"],
        [(v["name"], k, fmt(v.get("Dice"), 4), fmt(v.get("IoU"), 4)) for k, v in mean.items()],
    )
    lines += ["", f"Foreground mean Dice: {fmt(summary['dice']['foreground_mean'].get('Dice'), 4)}"]
    lines += _section(
        "Lesion-wise detection (pooled over cases)",
        ["class", "GT lesions", "detected", "sensitivity", "pred. lesions", "TP", "FP", "precision", "F1", "FP/case"],
        _md_lesion_rows(summary),
    )
    lines += _section(
        "Sensitivity by GT lesion size (longest diameter)",
        ["class", "size", "GT lesions", "detected", "sensitivity"],
        [
            (v["name"], st["name"], st["n_gt_lesions"], st["n_detected"], fmt(st["sensitivity"]))
            for v in summary["lesion"].values()
            for st in v["strata"]
        ],
    )
    lines += _section(
        "Patient level (any tumor voxel)",
        ["cases", "GT positive", "GT negative", "TP", "FN", "FP", "TN", "sensitivity", "specificity"],
        [_md_patient_row(summary["patient"])],
    )
    lines += _section("Per case", *_md_per_case(summary))
    return "\n".join(lines) + "\n"


def format_text(summary: dict[str, Any]) -> str:
    """A short plain-text summary for the terminal."""
    c = summary["cases"]
    out = [f"Evaluated {c['n_evaluated']} case(s)."]
    if c["gt_without_prediction"] or c["prediction_without_gt"]:
        out.append(
            f"--allow_missing: skipped {len(c['gt_without_prediction'])} GT case(s) without prediction and "
            f"{len(c['prediction_without_gt'])} prediction(s) without GT."
        )
    dice = ", ".join(f"{v['name']} {fmt(v.get('Dice'), 4)}" for v in summary["dice"]["mean"].values())
    out.append(f"Dice (nnU-Net, mean over cases): {dice}")
    for v in summary["lesion"].values():
        out.append(
            f"{v['name']}: lesion sensitivity {fmt(v['sensitivity'])} ({v['n_detected']}/{v['n_gt_lesions']}), "
            f"precision {fmt(v['precision'])} ({v['n_tp_pred']}/{v['n_pred_lesions']}), F1 {fmt(v['f1'])}, "
            f"FP lesions/case {fmt(v['fp_lesions_per_case'], 2)}"
        )
        strata = "; ".join(
            f"{st['name']} {fmt(st['sensitivity'])} ({st['n_detected']}/{st['n_gt_lesions']})" for st in v["strata"]
        )
        out.append(f"  sensitivity by size: {strata}")
    p = summary["patient"]
    out.append(
        f"Patient level: sensitivity {fmt(p['sensitivity'])} ({p['tp']}/{p['n_gt_positive']}), specificity "
        f"{fmt(p['specificity'])} ({p['tn']}/{p['n_gt_negative']})"
    )
    return "\n".join(out)


def write_summary(summary: dict[str, Any], output_json: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``summary`` as JSON to ``output_json`` and as Markdown next to it (same name, ``.md``), each atomically
    (temporary file in the same folder, then ``os.replace``). Both texts are rendered before either file is written.
    Returns (json path, markdown path)."""
    from nnunet_freetumor.utilities.files import atomic_write_text

    out_json = Path(output_json)
    out_md = out_json.with_suffix(".md")
    text_json = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    text_md = format_markdown(summary)
    atomic_write_text(out_json, text_json)
    atomic_write_text(out_md, text_md)
    return out_json, out_md


def headline(summary: dict[str, Any]) -> dict[str, float | None]:
    """The numbers FreeTumor's claims are about, from one ``evaluate_folder`` summary: Dice of the tumor classes
    (mean over classes), pooled lesion sensitivity / precision, sensitivity of the smallest size stratum (< 2 cm by
    default), patient-level specificity."""
    lesion = list(summary["lesion"].values())
    tumor_names = {v["name"] for v in lesion}
    dice = [v.get("Dice") for v in summary["dice"]["mean"].values() if v.get("name") in tumor_names]
    dice = [d for d in dice if d is not None]

    def pooled(key_num: str, key_den: str) -> float | None:
        return safe_div(sum(v[key_num] for v in lesion), sum(v[key_den] for v in lesion))

    small_det = sum(v["strata"][0]["n_detected"] for v in lesion if v["strata"])
    small_n = sum(v["strata"][0]["n_gt_lesions"] for v in lesion if v["strata"])
    return {
        "dice_tumor": float(np.mean(dice)) if dice else None,
        "lesion_sensitivity": pooled("n_detected", "n_gt_lesions"),
        "lesion_precision": pooled("n_tp_pred", "n_pred_lesions"),
        "small_lesion_sensitivity": safe_div(small_det, small_n),
        "patient_specificity": summary["patient"]["specificity"],
    }


def comparison_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Markdown table of ``headline`` numbers, one row per named summary (e.g. per trainer)."""
    rows = []
    for name, s in summaries.items():
        h = headline(s)
        rows.append(
            [
                name,
                *(
                    fmt(h[k])
                    for k in (
                        "dice_tumor",
                        "lesion_sensitivity",
                        "small_lesion_sensitivity",
                        "lesion_precision",
                        "patient_specificity",
                    )
                ),
            ]
        )
    small = next(
        (v["strata"][0]["name"] for s in summaries.values() for v in s["lesion"].values() if v["strata"]), "small"
    )
    header = [
        "",
        "Dice (tumor)",
        "lesion sensitivity",
        f"sensitivity {small}",
        "lesion precision",
        "patient specificity",
    ]
    return "\n".join(_table(header, rows))
