"""Drop ``rollout.server_command`` from stored recipes.

The setting named a program the worker ran, so any signed-in user could run commands on a worker.
It is no longer a recipe setting (the command is the worker host's GROUPWISE_ROLLOUT_SERVER_COMMAND);
without this migration, resuming or cloning an old run would fail on it instead of running it.
"""

from django.db import migrations


def drop_server_command(apps, schema_editor):
    for model_name in ("Run", "Sweep"):
        model = apps.get_model("runs", model_name)
        stored = model.objects.filter(recipe__rollout__has_key="server_command")
        for row in stored.iterator():
            row.recipe["rollout"].pop("server_command", None)
            row.save(update_fields=["recipe"])


class Migration(migrations.Migration):

    dependencies = [("runs", "0003_sweep")]

    operations = [migrations.RunPython(drop_server_command, migrations.RunPython.noop)]
