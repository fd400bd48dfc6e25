from django.db import migrations, models


class Migration(migrations.Migration):
    """Leases for Idempotency-Keys in progress (docs/decisions.md, "Idempotency-Key leases").

    Both columns can be added while the previous release still serves: it inserts neither, and
    its rows in progress get their lease counted from `created_at`.
    """

    dependencies = [("closure", "0013_evidence_stored_bytes")]

    operations = [
        migrations.AddField(
            model_name="idempotencyrecord",
            name="lease_version",
            field=models.PositiveIntegerField(db_default=1),
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="leased_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
