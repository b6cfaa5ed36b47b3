"""``ApiToken`` moved to the accounts app: it leaves this app's state only.

No database operation: the table ``runs_apitoken`` and its rows stay, and the accounts app's first
migration takes the model over with that table (``Meta.db_table``).
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [("runs", "0004_drop_server_command")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiToken")],
            database_operations=[],
        ),
    ]
