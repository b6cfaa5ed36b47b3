import django.db.models.deletion
from django.db import migrations, models

# The point format is the one the current code reads, so the backfill uses the current code's
# function rather than a frozen copy of it.
from webapp.runs.metrics import SERIES, chart_point


def add_points(apps, schema_editor):
    """A chart point for every stored event a chart draws, its superseded flag copied."""
    Event = apps.get_model("runs", "Event")
    ChartPoint = apps.get_model("runs", "ChartPoint")
    batch = []
    charted = Event.objects.filter(type__in=list(SERIES)).order_by("pk")
    for event in charted.iterator(chunk_size=200):
        point = chart_point(event.type, event.payload)
        if point is None:
            continue
        batch.append(
            ChartPoint(
                run_id=event.run_id,
                event_id=event.pk,
                series=SERIES[event.type],
                step=event.payload["step"],
                values=point,
                superseded=event.superseded,
            )
        )
        if len(batch) >= 500:
            ChartPoint.objects.bulk_create(batch)
            batch = []
    ChartPoint.objects.bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0006_sweep_to_sweeps"),
    ]

    operations = [
        migrations.CreateModel(
            name="ChartPoint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "series",
                    models.CharField(
                        help_text="reward, train, evaluation or throughput.", max_length=20
                    ),
                ),
                ("step", models.PositiveIntegerField()),
                (
                    "values",
                    models.JSONField(
                        help_text="The point's fields, as the metrics API gives them."
                    ),
                ),
                (
                    "superseded",
                    models.BooleanField(default=False, help_text="Its event's flag, copied."),
                ),
                (
                    "event",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chart_point",
                        to="runs.event",
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chart_points",
                        to="runs.run",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["run", "series", "superseded", "step"], name="chartpoint_run_series"
                    )
                ],
            },
        ),
        migrations.RunPython(add_points, migrations.RunPython.noop),
    ]
