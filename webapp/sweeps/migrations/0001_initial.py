"""``Sweep``, taken over from the runs app with its table ``runs_sweep`` (no database change).

Its content type is relabelled from ``runs`` to ``sweeps``, so that the permissions and admin log
entries that point at it follow the model instead of being left behind under a stale type.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def relabel(old: str, new: str):
    def move(apps, schema_editor):
        content_type = apps.get_model("contenttypes", "ContentType")
        if not content_type.objects.filter(app_label=new, model="sweep").exists():
            content_type.objects.filter(app_label=old, model="sweep").update(app_label=new)
        content_type.objects.clear_cache()

    return move


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("runs", "0006_sweep_to_sweeps"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Sweep",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("recipe", models.JSONField(help_text="The swept recipe; only its microgroup size varies.")),
                        ("sizes", models.JSONField(help_text="The microgroup sizes to measure, ascending.")),
                        ("rollouts", models.PositiveIntegerField(default=2)),
                        ("update", models.BooleanField(default=False, help_text="Train on each rollout too.")),
                        ("status", models.CharField(choices=[("queued", "Queued"), ("running", "Running"), ("finished", "Finished"), ("failed", "Failed")], default="queued", max_length=20)),
                        ("rows", models.JSONField(default=list, help_text="One measured row per size, as they finish.")),
                        ("report", models.JSONField(blank=True, help_text="engine.sweep.SweepReport.to_dict() once finished.", null=True)),
                        ("error", models.TextField(blank=True)),
                        ("worker", models.CharField(blank=True, max_length=255)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("owner", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="sweeps", to=settings.AUTH_USER_MODEL)),
                        ("run", models.ForeignKey(blank=True, help_text="The run whose recipe was swept, if it came from one.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="sweeps", to="runs.run")),
                    ],
                    options={
                        "db_table": "runs_sweep",
                        "ordering": ["-created_at", "-pk"],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel("runs", "sweeps"), relabel("sweeps", "runs")),
    ]
