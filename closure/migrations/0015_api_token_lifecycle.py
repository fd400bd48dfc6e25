"""API token lifecycle: the API token evidence kind, the platform owners' permission to manage
every user's tokens, and the indexes behind the token lists.

`manage_api_tokens` is granted to the platform owners group here; `manage.py sync_roles` keeps
it (closure.roles).
"""

from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

PERMISSION = "manage_api_tokens"
ROLE = "platform owners"


def grant_manage_api_tokens(apps, schema_editor):
    # Permissions are otherwise created after the whole migrate run; the grant needs it now.
    app_config = apps.get_app_config("closure")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.get(content_type__app_label="closure", codename=PERMISSION)
    for group in Group.objects.filter(name=ROLE):
        group.permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("closure", "0014_idempotency_lease"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="apitoken",
            options={
                "verbose_name": "API token",
                "ordering": ["-created_at", "-id"],
                "permissions": [
                    ("manage_api_tokens", "Can list, create and revoke every user's API tokens")
                ],
            },
        ),
        migrations.AddIndex(
            model_name="apitoken",
            index=models.Index(
                fields=["user", "-created_at", "-id"], name="apitoken_user_created_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="apitoken",
            index=models.Index(fields=["-created_at", "-id"], name="apitoken_created_idx"),
        ),
        migrations.RemoveConstraint(
            model_name="evidence",
            name="evidence_kind_valid",
        ),
        migrations.AlterField(
            model_name="evidence",
            name="metadata_kind",
            field=models.CharField(
                choices=[
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-event-ingest",
                        "Delivery event ingest",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health",
                        "Retry health report",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-plan",
                        "Health alert plan",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery",
                        "Initial alert delivery",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-ack",
                        "Alert acknowledgement",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery-waiver",
                        "Delivery waiver",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery-retry-plan",
                        "Retry plan",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery-retry-worker-run",
                        "Retry worker run",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery-retry-execution-record",
                        "Retry execution record",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-connector-change",
                        "Connector change",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-connector-circuit",
                        "Connector circuit transition",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-closure-review",
                        "Closure review",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-release-readiness-summary",
                        "Release readiness summary",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-operator-runbook-export",
                        "Operator runbook export",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-evidence-export",
                        "Evidence export",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-admin-export",
                        "Admin changelist export",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-access-login-lockout",
                        "Login lockout",
                    ),
                    (
                        "go-backend-rollback-drill-acknowledgement-audit-delivery-access-api-token",
                        "API token change",
                    ),
                ],
                max_length=160,
            ),
        ),
        migrations.AddConstraint(
            model_name="evidence",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "metadata_kind__in",
                        [
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-event-ingest",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-plan",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-ack",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery-waiver",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery-retry-plan",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery-retry-worker-run",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-delivery-retry-execution-record",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-connector-change",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-recovery-executive-report-delivery-retry-health-alert-connector-circuit",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-closure-review",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-release-readiness-summary",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-operator-runbook-export",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-evidence-export",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-final-reporting-admin-export",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-access-login-lockout",
                            "go-backend-rollback-drill-acknowledgement-audit-delivery-access-api-token",
                        ],
                    )
                ),
                name="evidence_kind_valid",
            ),
        ),
        migrations.RunPython(grant_manage_api_tokens, migrations.RunPython.noop),
    ]
