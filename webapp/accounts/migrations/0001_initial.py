"""``ApiToken``, taken over from the runs app with its table ``runs_apitoken`` (no database change).

Its content type is relabelled from ``runs`` to ``accounts``, so that the permissions and admin
log entries that point at it follow the model instead of being left behind under a stale type.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def relabel(old: str, new: str):
    def move(apps, schema_editor):
        content_type = apps.get_model("contenttypes", "ContentType")
        if not content_type.objects.filter(app_label=new, model="apitoken").exists():
            content_type.objects.filter(app_label=old, model="apitoken").update(app_label=new)
        content_type.objects.clear_cache()

    return move


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("runs", "0005_apitoken_to_accounts"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiToken",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=100)),
                        ("digest", models.CharField(max_length=64, unique=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="tokens", to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "db_table": "runs_apitoken",
                        "ordering": ["-created_at"],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel("runs", "accounts"), relabel("accounts", "runs")),
    ]
