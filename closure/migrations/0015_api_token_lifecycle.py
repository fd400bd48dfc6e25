from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("closure", "0014_idempotency_lease")]

    operations = []
