"""``Sweep`` moved to the sweeps app: it leaves this app's state only.

No database operation: the table ``runs_sweep`` and its rows stay, and the sweeps app's first
migration takes the model over with that table (``Meta.db_table``).
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [("runs", "0005_apitoken_to_accounts")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Sweep")],
            database_operations=[],
        ),
    ]
