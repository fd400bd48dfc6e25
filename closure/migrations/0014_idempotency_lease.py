from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("closure", "0013_evidence_stored_bytes")]

    operations = []
