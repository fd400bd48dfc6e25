"""Domain errors raised by services; the API and console turn them into responses."""


class ServiceError(Exception):
    status = 400
    code = "invalid_request"
    title = "Invalid request"

    def __init__(self, detail: str, *, code: str | None = None, errors: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.errors = errors or {}


class InvalidInput(ServiceError):
    status = 400
    code = "validation_error"
    title = "Invalid input"


class NotFound(ServiceError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"
    title = "Conflict"
