from django.core.management.base import BaseCommand

from closure.services.idempotency import idempotency_prune


class Command(BaseCommand):
    help = "Delete Idempotency-Key records older than their 24-hour lifetime."

    def handle(self, *args, **options):
        self.stdout.write(f"pruned {idempotency_prune()} expired idempotency keys")
