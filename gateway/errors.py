"""The error hierarchy: one root, `GatewayError`, for everything the gateway raises.

DynamoDB's own error code (when there is one) is kept as data in `code`, the way PynamoDB
exposes `cause_response_code`, so callers never have to parse messages. Underlying exceptions
are chained with ``raise ... from``.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error raised by gateway."""

    def __init__(self, message: str, *, code: str | None = None, operation: str | None = None):
        super().__init__(message)
        self.message = message
        #: DynamoDB / AWS error code (e.g. "ValidationException"), when the error came from AWS.
        self.code = code
        #: The DynamoDB operation (e.g. "PutItem") that failed, when known.
        self.operation = operation


class ValidationError(GatewayError, ValueError):
    """Bad input: raised before anything is sent, nothing is stored or cached."""


class ConflictError(GatewayError):
    """An ``if_rev`` condition failed: the stored revision is not the one expected."""

    def __init__(
        self,
        message: str,
        *,
        db_name: str | None = None,
        doc_id: str | None = None,
        expected_rev: str | None = None,
        code: str | None = "ConditionalCheckFailedException",
        operation: str | None = None,
    ):
        super().__init__(message, code=code, operation=operation)
        self.db_name = db_name
        self.doc_id = doc_id
        self.expected_rev = expected_rev


class ThrottledError(GatewayError):
    """Throttling outlasted the retry policy."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        elapsed: float,
        code: str | None = None,
        operation: str | None = None,
    ):
        super().__init__(message, code=code, operation=operation)
        #: How many attempts were made in total (first try included).
        self.attempts = attempts
        #: Seconds spent, from the first attempt until giving up.
        self.elapsed = elapsed


class ConfigError(GatewayError, ValueError):
    """Bad settings: the message names the key and where its value came from."""


class CredentialsError(GatewayError):
    """The AWS credential chain found no (valid) credentials."""


class AccessDeniedError(GatewayError):
    """The caller's AWS identity lacks a permission."""


class ServiceUnavailableError(GatewayError):
    """DynamoDB or DAX cannot be reached after retries, or (``operation="cache"``) a write was
    refused, nothing written, because the cache tier could not be told about it."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int = 1,
        elapsed: float = 0.0,
        code: str | None = None,
        operation: str | None = None,
    ):
        super().__init__(message, code=code, operation=operation)
        self.attempts = attempts
        self.elapsed = elapsed


__all__ = [
    "AccessDeniedError",
    "ConfigError",
    "ConflictError",
    "CredentialsError",
    "GatewayError",
    "ServiceUnavailableError",
    "ThrottledError",
    "ValidationError",
]
