from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand

from closure.roles import ROLE_PERMISSIONS, sync_roles


class Command(BaseCommand):
    help = "Create the operators, auditors and platform owners groups with their permissions."

    def handle(self, *args, **options):
        sync_roles(Group, Permission)
        self.stdout.write(f"roles in place: {', '.join(ROLE_PERMISSIONS)}")
