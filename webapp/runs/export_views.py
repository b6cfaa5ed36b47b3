"""Downloads of a run: trained weights (zip), metrics (CSV, JSON) and samples (zip).

Thin over the engine (``engine.export.weights``, ``engine.run.metrics_table``,
``engine.export.samples``): this module finds the run's records, streams what the engine makes, and
is shared by the run page's links and the API's ``export`` actions. Another user's run is a 404, as
everywhere. Downloads are ``StreamingDownload``s: under the ASGI server the archive is made chunk by
chunk as the client reads it, in a thread of its own, never whole in the web process.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from engine.export.samples import SampleRecord, sample_files
from engine.export.snippets import loading_snippet
from engine.export.weights import export_weights
from engine.export.zipstream import stream_zip
from engine.recipe import Recipe
from engine.run import metrics_table
from engine.run.checkpoint import CheckpointError
from webapp.core.streaming import StreamingDownload
from webapp.runs.models import MAX_ID, Checkpoint, Event, Run

#: The event types the metrics table reads.
METRIC_EVENTS = ("train_step_finished", "rollout_finished", "evaluation_finished")


def export_folder(run: Run, step: int) -> str:
    """The folder a weights export unpacks to (and its zip's name without ``.zip``)."""
    return f"run-{run.pk}-step-{step:06d}"


def base_model() -> str | None:
    """The model directory web runs with an empty ``model.path`` train."""
    directory = settings.GROUPWISE_MODEL_DIR
    return str(directory) if directory else None


def export_context(run: Run) -> dict[str, Any]:
    """What the run page's Export panel shows: checkpoint steps, the snippet for the latest."""
    steps = list(run.checkpoints.order_by("-step").values_list("step", flat=True))
    snippet = ""
    if steps:
        snippet = loading_snippet(
            Recipe.from_dict(run.recipe), export_folder(run, steps[0]), base_model=base_model()
        )
    return {"checkpoint_steps": steps, "snippet": snippet}


def metric_rows(run: Run) -> list[dict[str, Any]]:
    """The run's metrics table from its stored, non-superseded events."""
    payloads = (
        Event.objects.filter(run=run, superseded=False, type__in=METRIC_EVENTS)
        .order_by("seq")
        .values_list("payload", flat=True)
    )
    return metrics_table.metric_rows(payloads.iterator(chunk_size=200))


def metrics_csv(run: Run) -> StreamingDownload:
    return _download(
        metrics_table.csv_lines(metric_rows(run)), "text/csv", f"run-{run.pk}-metrics.csv"
    )


def metrics_json(run: Run) -> HttpResponse:
    response = HttpResponse(metrics_table.dumps(metric_rows(run)), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-metrics.json"'
    return response


def samples_zip(run: Run, step: int | None = None) -> StreamingDownload:
    """Every non-superseded rollout sample (of ``step`` when given), with a manifest."""
    samples = run.samples.filter(superseded=False).order_by("step", "group_index", "index_in_group")
    if step is not None:
        samples = samples.filter(step=step)
    media = Path(settings.MEDIA_ROOT)

    def records() -> Iterator[SampleRecord]:
        for sample in samples.iterator(chunk_size=500):
            yield SampleRecord(
                step=sample.step,
                rollout_index=sample.rollout_index,
                group_index=sample.group_index,
                sample_index=sample.index_in_group,
                prompt=sample.prompt,
                seed=sample.seed,
                reward=sample.reward,
                advantage=sample.advantage,
                reward_components=sample.components,
                image=media / sample.image,
            )

    suffix = "" if step is None else f"-step-{step:06d}"
    return _download(
        stream_zip(sample_files(records)), "application/zip", f"run-{run.pk}-samples{suffix}.zip"
    )


def weights_zip(run: Run, step: int | None = None) -> StreamingDownload:
    """The export of the run's checkpoint at ``step`` (default: the latest). A 404 says why
    when there is no such checkpoint, or its folder is gone or corrupt."""
    checkpoints = run.checkpoints.order_by("-step")
    checkpoint: Checkpoint | None = (
        checkpoints.filter(step=step).first() if step is not None else checkpoints.first()
    )
    if checkpoint is None:
        raise Http404(
            f"run #{run.pk} has no checkpoint"
            + ("" if step is None else f" of step {step}")
            + ": weights are exported from checkpoints (run.checkpoint_every)"
        )
    folder = export_folder(run, checkpoint.step)
    scratch = Path(tempfile.mkdtemp(prefix=f"groupwise-{folder}-"))
    try:
        exported = export_weights(
            Path(checkpoint.path), scratch, folder=folder, base_model=base_model()
        )
    except Exception as error:
        shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(error, CheckpointError):
            raise Http404(str(error)) from None
        raise
    members = (dataclasses.replace(f, name=f"{folder}/{f.name}") for f in exported.files)
    return _download(_then_remove(stream_zip(members), scratch), "application/zip", f"{folder}.zip")


def _then_remove(chunks: Iterator[bytes], scratch: Path) -> Iterator[bytes]:
    """``chunks``, then ``scratch`` removed, also when the client goes away mid-download
    (Django closes the response, which closes this generator)."""
    try:
        yield from chunks
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _download(chunks: Iterable[Any], content_type: str, filename: str) -> StreamingDownload:
    response = StreamingDownload(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _step(request: HttpRequest) -> int | None:
    raw = request.GET.get("step", "")
    if raw == "":
        return None
    try:
        step = int(raw)
    except ValueError:
        raise Http404(f"step={raw[:40]!r} is not a step number") from None
    if abs(step) > MAX_ID:
        raise Http404(f"step={raw[:40]} is no step of this run")
    return step


def _run(request: HttpRequest, run_id: int) -> Run:
    return get_object_or_404(Run.objects.visible_to(request.user), pk=run_id)


@require_GET
def export_metrics_csv(request: HttpRequest, run_id: int) -> StreamingDownload:
    return metrics_csv(_run(request, run_id))


@require_GET
def export_metrics_json(request: HttpRequest, run_id: int) -> HttpResponse:
    return metrics_json(_run(request, run_id))


@require_GET
def export_samples(request: HttpRequest, run_id: int) -> StreamingDownload:
    return samples_zip(_run(request, run_id), _step(request))


@require_GET
def export_weights_zip(request: HttpRequest, run_id: int) -> StreamingDownload:
    return weights_zip(_run(request, run_id), _step(request))
