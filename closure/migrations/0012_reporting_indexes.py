import django.db.models.functions.comparison
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("closure", "0011_ops_login_lockout_cache")]

    operations = [
        migrations.AddIndex(
            model_name="alertdelivery",
            index=models.Index(
                django.db.models.functions.comparison.Coalesce("delivered_at", "last_attempt_at"),
                models.F("id"),
                condition=models.Q(status__in=["delivered", "accepted"]),
                name="delivery_reached_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="executionrecord",
            index=models.Index(
                fields=["provider", "-executed_at", "-id"], name="execution_provider_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="evidence",
            index=models.Index(fields=["signer", "-sequence"], name="evidence_signer_idx"),
        ),
        migrations.AddIndex(
            model_name="evidence",
            index=models.Index(fields=["provider", "-sequence"], name="evidence_provider_idx"),
        ),
    ]
