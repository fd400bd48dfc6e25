from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("closure", "0012_reporting_indexes")]

    operations = []
