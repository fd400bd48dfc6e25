"""Checks shared by the kinds' `clean_config`. Messages never quote the value: it is secret."""

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from closure.connectors.base import ConnectorConfigInvalid
from closure.connectors.http import DestinationRefused, destination_validate


class ConfigCheck:
    """Collects the errors of one configuration, then raises them all at once."""

    def __init__(self, config: dict, allowed: tuple[str, ...]) -> None:
        self.config = config
        self.errors: dict[str, list[str]] = {}
        self.cleaned: dict = {}
        for key in sorted(set(config) - set(allowed)):
            self.add(key, "Not used by this kind of connector.")

    def add(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)

    def text(self, key: str, *, required: bool, max_length: int = 2048) -> str | None:
        value = self.config.get(key)
        if value is None or value == "":
            if required:
                self.add(key, "This value is required.")
            return None
        if not isinstance(value, str):
            self.add(key, "Must be a string.")
            return None
        if len(value) > max_length or any(ch in value for ch in "\r\n\x00"):
            self.add(key, f"Must be one line of at most {max_length} characters.")
            return None
        self.cleaned[key] = value
        return value

    def url(self, key: str, *, required: bool) -> str | None:
        value = self.text(key, required=required)
        if value is None:
            return None
        try:
            destination_validate(value)
        except DestinationRefused as exc:
            self.cleaned.pop(key, None)
            # The reason names a rule (scheme, numeric form, address range), never the URL.
            self.add(key, f"Not an allowed destination: {exc}.")
            return None
        return value

    def emails(self, key: str, *, required: bool, max_count: int = 50) -> list[str] | None:
        value = self.config.get(key)
        if isinstance(value, str):
            value = [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
        if not value:
            if required:
                self.add(key, "Name at least one address.")
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(key, "Must be a list of e-mail addresses.")
            return None
        if len(value) > max_count:
            self.add(key, f"At most {max_count} addresses.")
            return None
        for position, address in enumerate(value, start=1):
            try:
                validate_email(address)
            except ValidationError:
                self.add(key, f"Address {position} is not a valid e-mail address.")
                return None
        self.cleaned[key] = list(dict.fromkeys(value))
        return self.cleaned[key]

    def result(self) -> dict:
        if self.errors:
            raise ConnectorConfigInvalid(self.errors)
        return self.cleaned
