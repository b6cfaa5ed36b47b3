from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="workerheartbeat",
            name="pid_namespace",
            field=models.CharField(
                blank=True,
                help_text="The process's pid namespace (Linux), e.g. pid:[4026531836]: only a "
                "process in the same one may judge by the pid whether it still runs.",
                max_length=64,
            ),
        ),
    ]
