"""The three roles as Django groups, with the permissions each one holds.

Used by the data migration that creates the groups and by `manage.py sync_roles`.
"""

VIEW_ALL = [
    f"view_{model}"
    for model in (
        "deliveryevent",
        "healthreport",
        "connector",
        "healthalert",
        "alertdelivery",
        "acknowledgement",
        "retryplan",
        "retrydecision",
        "workerrun",
        "executionrecord",
        "evidence",
        "evidencecheckpoint",
        "closurereview",
    )
]

OPERATORS = "operators"
AUDITORS = "auditors"
PLATFORM_OWNERS = "platform owners"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    OPERATORS: [
        *VIEW_ALL,
        "add_deliveryevent",
        "add_healthreport",
        "add_healthalert",
        "acknowledge_alert",
        "plan_retry",
        "execute_retry",
        "waive_delivery",
        "review_closure",
    ],
    AUDITORS: [*VIEW_ALL, "export_evidence"],
    PLATFORM_OWNERS: [*VIEW_ALL, "add_connector", "change_connector", "manage_api_tokens"],
}


def sync_roles(group_model, permission_model, *, strict: bool = True) -> None:
    """Create the groups and set exactly their permissions (idempotent).

    `strict=False` (for migrations) grants only the permissions that exist yet: a model added by
    a later migration gets its permissions granted by that migration.
    """
    for name, codenames in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=name)
        permissions = list(
            permission_model.objects.filter(
                content_type__app_label="closure", codename__in=codenames
            )
        )
        missing = set(codenames) - {p.codename for p in permissions}
        if missing and strict:
            raise RuntimeError(f"permissions missing for role {name}: {sorted(missing)}")
        group.permissions.set(permissions)
