"""What happened, and the report of it: ``unlabeled_report.json`` and ``unlabeled_report.md`` (per case: organ
volumes, largest-component shares, HU checks, tumor voxels, decision and reason) in the dataset folder, or where
``--report`` says (a folder, or a .json path with the .md beside it)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nnunet_freetumor.unlabeled.dataset import RawDataset
from nnunet_freetumor.unlabeled.qc import ADDED, ADDED_WITH_TUMOR, REJECTED, SKIPPED_TUMOR, CaseAssessment
from nnunet_freetumor.unlabeled.request import UnlabeledRequest
from nnunet_freetumor.utilities.text import fmt

REPORT_JSON = "unlabeled_report.json"
REPORT_MD = "unlabeled_report.md"


@dataclass
class UnlabeledResult:
    """What happened: the assessments, where things went, what to run next."""

    target: Path
    dataset_name: str
    cases: list[CaseAssessment] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)
    split_files: list[Path] = field(default_factory=list)
    split_note: str = ""
    dry_run: bool = False
    next_command: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # build_report's, as written

    @property
    def counts(self) -> dict[str, Any]:
        c = Counter(a.decision for a in self.cases)
        return {
            "cases": len(self.cases),
            ADDED: c[ADDED],
            ADDED_WITH_TUMOR: c[ADDED_WITH_TUMOR],
            SKIPPED_TUMOR: c[SKIPPED_TUMOR],
            REJECTED: c[REJECTED],
            "rejected_by": dict(Counter(a.category for a in self.cases if a.decision == REJECTED)),
        }

    @property
    def accepted(self) -> list[CaseAssessment]:
        return [a for a in self.cases if a.accepted]


def build_report(
    req: UnlabeledRequest,
    dataset: RawDataset,
    model_folder: Path | None,
    label_map: Mapping[int, int],
    result: UnlabeledResult,
) -> dict[str, Any]:
    """The report: the settings, where the masks came from, the counts, the split and one entry per case."""
    if req.organ_masks:
        source = {"supplied": str(Path(req.organ_masks).resolve())}
    else:
        source = {
            "predicted": str(model_folder.resolve()),
            "folds": list(req.folds),
            "checkpoint": req.checkpoint,
            "tta": not req.disable_tta,
        }
    unmapped = Counter()
    for a in result.cases:
        unmapped.update({k: 1 for k in a.unmapped_voxels})
    return {
        "dataset": dataset.name,
        "target": result.target.name,
        "in_place": req.output_id is None,
        "dry_run": req.dry_run,
        "input_folder": str(Path(req.input_folder).resolve()),
        "organ_masks": source,
        "label_map": {str(k): v for k, v in sorted(label_map.items())},
        "unmapped_label_ids": {
            "note": "non-zero ids the label map does not name were set to background (0)",
            "cases_per_id": dict(unmapped),
        },
        "config_source": dataset.cfg_source,
        "organs": {str(k): v for k, v in dataset.organ_names.items()},
        "tumor_labels": {str(k): v for k, v in dataset.tumor_names.items()},
        "tumors": req.tumors,
        "prefix": req.prefix,
        "filters": {**asdict(req.filters), "organ_hu": list(req.filters.organ_hu_for(dataset.cfg))},
        "counts": result.counts,
        "split": result.split_note,
        "next": result.next_command,
        "cases": [asdict(a) for a in result.cases],
    }


def report_paths(report: str | None, folder_default: Path) -> tuple[Path, Path]:
    """(json, md) paths: ``--report`` (a .json path, or a folder), else the two files in ``folder_default``."""
    if report:
        p = Path(report)
        if p.suffix == ".json":
            return p, p.with_suffix(".md")
        return p / REPORT_JSON, p / REPORT_MD
    return folder_default / REPORT_JSON, folder_default / REPORT_MD


def report_texts(report: Mapping[str, Any]) -> tuple[str, str]:
    """(json, md) texts of the report."""
    return json.dumps(report, indent=1) + "\n", report_markdown(report)


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: settings, counts and one table row per case."""
    c = report["counts"]
    f = report["filters"]
    max_ml = "inf" if f["max_organ_ml"] is None else f"{f['max_organ_ml']:g}"
    lines = [
        f"# Unlabeled cases for {report['target']}" + (" (dry run: nothing written)" if report["dry_run"] else ""),
        "",
        f"- source: {report['dataset']}" + (", in place" if report["in_place"] else f", copied to {report['target']}"),
        f"- images: {report['input_folder']}",
        f"- organ masks: {', '.join(f'{k} {v}' for k, v in report['organ_masks'].items())}",
        f"- label map (source -> dataset): {report['label_map']}; ids not in it became background "
        f"(cases per id: {report['unmapped_label_ids']['cases_per_id'] or 'none'})",
        f"- filters: organ volume [{f['min_organ_ml']:g}, {max_ml}] ml, largest component >= "
        f"{f['min_largest_component']:g}, 1st percentile < {f['max_p1_hu']:g} HU, organ median in "
        f"[{f['organ_hu'][0]:g}, {f['organ_hu'][1]:g}] HU; predicted tumors: {report['tumors']}",
        f"- cases: {c['cases']}; added {c[ADDED]}, added with tumor {c[ADDED_WITH_TUMOR]}, skipped for a tumor "
        f"{c[SKIPPED_TUMOR]}, rejected {c[REJECTED]}" + (f" ({c['rejected_by']})" if c["rejected_by"] else ""),
        f"- split: {report['split']}",
        f"- next: `{report['next']}`",
        "",
        "| case | new id | organ volume (ml) | largest component | 1st pct HU | organ median HU | tumor voxels | "
        "decision | reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt_all(d: Mapping[str, Any], digits: int) -> str:
        return ", ".join(f"{k} {fmt(v, digits, missing='-')}" for k, v in d.items())

    for a in report["cases"]:
        median = "-" if a["organ_median_hu"] is None else f"{a['organ_median_hu']:.0f}"
        lines.append(
            f"| {a['case']} | {a['new_id']} | {fmt_all(a['organ_ml'], 1)} | {fmt_all(a['largest_component'], 2)} | "
            f"{a['p1_hu']:.0f} | {median} | {fmt_all(a['tumor_voxels'], 0)} | {a['decision']} | "
            f"{'; '.join(a['reasons']) or 'ok'} |"
        )
    return "\n".join(lines) + "\n"
