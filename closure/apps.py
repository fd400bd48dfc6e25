from django.apps import AppConfig


class ClosureConfig(AppConfig):
    name = "closure"
    verbose_name = "CAVRA closure"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from closure import checks  # noqa: F401  (registers system checks)
