"""The kinds that POST one JSON document per attempt (webhook, Slack, Teams, PagerDuty).

Each kind says where the document goes, what it holds, which headers go with it and how the
answer reads; the sending, the fingerprint and the classified outcome are the same for all.
"""

from typing import NamedTuple

from closure.connectors import http
from closure.connectors.base import AlertMessage, SendOutcome, config_error, request_fingerprint
from closure.connectors.validation import ConfigCheck
from closure.evidence.canonical import canonical_json


class ConfigUnusable(Exception):
    """The stored configuration cannot make this request; the message names what is missing,
    never a value."""


class Answer(NamedTuple):
    """How a kind reads the receiver's answer."""

    delivered: bool
    accepted: bool = False
    # The class of a failure the status alone would not name (a 200 that refuses).
    error_class: str = ""


def answered_2xx(result: http.HttpResult) -> bool:
    return result.status is not None and 200 <= result.status < 300


class JsonPostConnector:
    """A connector kind whose configuration is one destination URL, unless it says otherwise."""

    # Names the kind in configuration errors ("slack connector has no url").
    name = ""
    config_keys: tuple[str, ...] = ("url",)

    def clean_config(self, config: dict) -> dict:
        check = ConfigCheck(config, self.config_keys)
        self.check_config(check)
        return check.result()

    def check_config(self, check: ConfigCheck) -> None:
        check.url("url", required=True)

    def url(self, config: dict) -> str:
        url = config.get("url")
        if not isinstance(url, str) or not url:
            raise ConfigUnusable(f"{self.name} connector has no url")
        return url

    def document(self, message: AlertMessage, config: dict) -> dict:
        raise NotImplementedError

    def headers(self, message: AlertMessage, body: bytes, config: dict) -> dict[str, str]:
        return {}

    def read_answer(self, result: http.HttpResult) -> Answer:
        return Answer(delivered=answered_2xx(result))

    def send(self, *, config: dict, message: AlertMessage, timeout_seconds: float) -> SendOutcome:
        try:
            url = self.url(config)
            body = canonical_json(self.document(message, config))
            headers = self.headers(message, body, config)
        except ConfigUnusable as exc:
            return config_error(str(exc))
        result = http.post_json(url, body=body, headers=headers, timeout_seconds=timeout_seconds)
        answer = self.read_answer(result)
        return SendOutcome.from_http(
            result,
            fingerprint=request_fingerprint(message, body),
            delivered=answer.delivered,
            accepted=answer.accepted,
            error_class=answer.error_class,
            config=config,
        )
