from django.apps import AppConfig


class ClosureConfig(AppConfig):
    name = "closure"
    verbose_name = "CAVRA closure"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import request_finished
        from django.db.models.signals import post_save

        from closure import checks  # noqa: F401  (registers system checks)
        from closure.models import Evidence
        from closure.ops import lockout  # noqa: F401  (records login lockouts as evidence)
        from closure.ops.logs import forget_request_id, log_evidence_appended

        post_save.connect(log_evidence_appended, sender=Evidence, dispatch_uid="cavra-evidence-log")
        request_finished.connect(forget_request_id, dispatch_uid="cavra-forget-request-id")
