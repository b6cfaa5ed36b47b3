"""``python -m engine sweep``: the microgroup sweep with a table that grows as sizes finish."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from engine.problems import RecipeError
from engine.recipe import Recipe
from engine.sweep import SweepReport, SweepRow, sweep, sweep_sizes

MIB = 2**20
#: Columns: header and how each row fills it.
COLUMNS = (
    ("M", lambda r: f"{r.microgroup_size}"),
    ("img/s", lambda r: f"{r.images_per_second:.1f}"),
    ("fwd/s", lambda r: f"{r.dit_forwards_per_second:.1f}"),
    ("e2e img/s", lambda r: f"{r.end_to_end_images_per_second:.1f}"),
    ("iter s", lambda r: f"{r.iteration_seconds:.2f}"),
    ("encode", lambda r: _phase(r, "encode")),
    ("denoise", lambda r: _phase(r, "denoise")),
    ("decode", lambda r: _phase(r, "decode")),
    ("reward", lambda r: _phase(r, "reward")),
    ("train", lambda r: _phase(r, "train")),
    ("peak MiB", lambda r: f"{r.peak_memory_bytes / MIB:.0f}"),
    ("+MiB", lambda r: f"{r.memory_growth_bytes / MIB:.1f}"),
    ("img diff", lambda r: f"{r.max_image_diff}"),
    ("logp diff", lambda r: f"{r.max_log_prob_diff:.1e}"),
    ("same", lambda r: "yes" if r.same_samples else "NO"),
)
WIDTH = 10


def run_sweep(
    recipe: Recipe,
    *,
    sizes: Sequence[int] | None,
    rollouts: int,
    update: bool,
    json_path: Path | None,
    out: TextIO,
) -> int:
    """Sweep, printing each size's row as it finishes and a summary; 0 on success, 1 when the
    sweep failed. Invalid sizes or rollouts raise ``RecipeError`` before anything runs."""
    sweep_sizes(recipe, sizes, rollouts)
    print(" ".join(f"{name:>{WIDTH}}" for name, _ in COLUMNS), file=out)

    def row_line(row: SweepRow) -> None:
        print(" ".join(f"{cell(row):>{WIDTH}}" for _, cell in COLUMNS), file=out, flush=True)

    try:
        report = sweep(recipe, sizes=sizes, rollouts=rollouts, update=update, on_result=row_line)
    except RecipeError:
        raise
    except (OSError, ValueError, RuntimeError) as error:
        print(f"sweep failed: {type(error).__name__}: {error}", file=out)
        return 1
    print(_summary(report), file=out)
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
        print(f"report written to {json_path}", file=out)
    return 0


def _phase(row: SweepRow, phase: str) -> str:
    seconds = row.phase_seconds.get(phase)
    return "-" if seconds is None else f"{seconds:.3f}"


def _summary(report: SweepReport) -> str:
    best = next(r for r in report.rows if r.microgroup_size == report.best_size)
    machine = report.machine
    within = ", ".join(map(str, report.within_tolerance)) or "none"
    return (
        f"best M: {report.best_size} ({best.end_to_end_images_per_second:.1f} images/s end to "
        f"end); same samples as M={report.sizes[0]} (images within {report.image_tolerance} "
        f"levels, log-probs within {report.log_prob_tolerance:.0e}): {within}\n"
        f"{report.rollouts} rollout(s) per size, {'with' if report.update else 'no'} updates; "
        f"seconds per rollout; memory: {report.memory_source}\n"
        f"machine: {machine.hostname}, {machine.device}, {machine.cpu_count} CPUs, "
        f"torch {machine.torch_version}, diffusers {machine.diffusers_version}"
    )
