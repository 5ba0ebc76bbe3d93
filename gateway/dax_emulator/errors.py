"""Errors as DAX sends them: an array of error codes, a message, and [request id, DynamoDB error
code, HTTP status]. amazondax maps the codes to the exception names a real cluster gives
(``DaxError.ERROR_MAP``), so a client sees the same ``ClientError`` codes as against DAX."""

from __future__ import annotations

import uuid
from typing import Any

from gateway.dax_emulator.cbor import Encoder

_DDB = (4, 37, 38, 39)
#: DynamoDB error code -> DAX's error-code path.
DYNAMODB_CODES: dict[str, tuple[int, ...]] = {
    "ProvisionedThroughputExceededException": (*_DDB, 40),
    "ResourceNotFoundException": (*_DDB, 41),
    "ConditionalCheckFailedException": (*_DDB, 43),
    "ResourceInUseException": (*_DDB, 45),
    "ValidationException": (*_DDB, 46),
    "InternalServerError": (*_DDB, 47),
    "InternalServerErrorException": (*_DDB, 47),
    "ItemCollectionSizeLimitExceededException": (*_DDB, 48),
    "LimitExceededException": (*_DDB, 49),
    "ThrottlingException": (*_DDB, 50),
    "TransactionCanceledException": (*_DDB, 58),
    "RequestLimitExceeded": (*_DDB, 61),
    "AccessDeniedException": (4, 37, 38, 42),
}
#: A table DAX cannot describe (``defineKeySchema``).
TABLE_NOT_FOUND = (4, 23, 24)
#: A request on a connection that has not authorized itself (amazondax: an auth error).
NOT_AUTHORIZED = (4, 23, 31, 33)
#: Codes amazondax does not map: the DynamoDB code sent beside them is used.
UNMAPPED = (4, 0)


class DaxFailure(Exception):
    """An error answer; ``close`` also ends the connection (the stream is out of step)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 400,
        codes: tuple[int, ...] | None = None,
        close: bool = False,
        cancellation_reasons: list[Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.codes = codes if codes is not None else DYNAMODB_CODES.get(code, UNMAPPED)
        self.close = close
        self.cancellation_reasons = cancellation_reasons

    def encode(self) -> bytes:
        enc = Encoder().array(len(self.codes))
        for code in self.codes:
            enc.integer(code)
        enc.text(self.message)
        details: list[Any] = [str(uuid.uuid4()), self.code, self.status]
        if self.cancellation_reasons is not None:
            details.append(self.cancellation_reasons)
        return enc.value(details).getvalue()


def validation(message: str, *, close: bool = False) -> DaxFailure:
    return DaxFailure("ValidationException", message, close=close)


def internal(message: str) -> DaxFailure:
    return DaxFailure("InternalServerError", message, status=500)
