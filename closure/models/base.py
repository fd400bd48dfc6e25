"""Building blocks shared by the closure models."""

import secrets

from django.conf import settings
from django.db import models
from django.utils.deconstruct import deconstructible


@deconstructible
class PublicId:
    """Default for a public ID: the record's prefix plus 16 random lowercase hex characters."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self) -> str:
        return f"{self.prefix}{secrets.token_hex(8)}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicId) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash(self.prefix)


class NewestFirstQuerySet(models.QuerySet):
    """Records listed newest first, in the model's `Meta.ordering` (a time, then the id breaking
    ties): the order of every list and "latest" read, served by the model's list index on it."""

    def newest_first(self):
        return self.order_by(*self.model._meta.ordering)


def public_id_field(prefix: str) -> models.CharField:
    return models.CharField(
        max_length=len(prefix) + 16, unique=True, editable=False, default=PublicId(prefix)
    )


def user_field() -> models.ForeignKey:
    """The user who did what a record records; a user named by records is never deleted."""
    return models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")


def choices_constraint(field: str, choices: type[models.TextChoices], name: str):
    return models.CheckConstraint(condition=models.Q(**{f"{field}__in": choices.values}), name=name)
