"""Create the role groups, and on PostgreSQL refuse UPDATE/DELETE on evidence in the database."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from closure.roles import sync_roles

GUARD_SQL = """
CREATE OR REPLACE FUNCTION closure_evidence_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'evidence is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER closure_evidence_append_only
    BEFORE UPDATE OR DELETE ON closure_evidence
    FOR EACH ROW EXECUTE FUNCTION closure_evidence_append_only();
"""

UNGUARD_SQL = """
DROP TRIGGER IF EXISTS closure_evidence_append_only ON closure_evidence;
DROP FUNCTION IF EXISTS closure_evidence_append_only();
"""


def create_roles(apps, schema_editor):
    app_config = apps.get_app_config("closure")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    # Not strict: models of later migrations (with view permissions in the roles) do not exist
    # yet; the migration that adds them grants their permissions.
    sync_roles(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"), strict=False)


def add_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # No params: the PL/pgSQL body contains a literal % that psycopg would take for one.
        schema_editor.execute(GUARD_SQL, params=None)


def remove_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNGUARD_SQL)


class Migration(migrations.Migration):
    dependencies = [
        ("closure", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunPython(add_guard, remove_guard),
    ]
