"""Translation of botocore / AWS errors into gateway's hierarchy, with troubleshooting advice.

The advice follows the original service's troubleshooting notes: how to provide credentials,
which IAM permission is missing, what to do about throttling, and DynamoDB's own message for a
ValidationException.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from gateway.errors import (
    AccessDeniedError,
    ConfigError,
    CredentialsError,
    GatewayError,
    ServiceUnavailableError,
    ThrottledError,
    ValidationError,
)

CREDENTIALS_ADVICE = (
    "Provide AWS credentials through the standard chain: the AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY environment variables, ~/.aws/credentials (run `aws configure`), "
    "AWS_PROFILE, or an instance / task role. For a local emulator any dummy values work."
)

_ACCESS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})
_BAD_CREDENTIALS_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "MissingAuthenticationTokenException",
    }
)
#: Error codes that mean "slow down": the one list, used by `translate` and by the retry
#: policy (`gateway.retry`), which retries them with backoff and raises `ThrottledError` when it
#: gives up.
THROTTLE_CODES: frozenset[str] = frozenset(
    {
        # DynamoDB's own three: a table or index over its provisioned (or on-demand maximum)
        # throughput; the request rate of the control plane (CreateTable, DescribeTable, ...)
        # and, since 2024, of on-demand tables; the account's per-region throughput quota.
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        # DynamoDB: too many concurrent control-plane operations (e.g. more than 500 tables
        # CREATING at once). Rare for the gateway, which creates tables on first use, but
        # backing off is the right answer; botocore classes it as throttling too.
        "LimitExceededException",
        # Generic AWS spellings, which DynamoDB-compatible endpoints (and DAX's HTTP front)
        # may use; taken from botocore's ``ThrottledRetryableChecker``.
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        # Deliberately NOT here, although botocore's checker lists it:
        # TransactionInProgressException. DynamoDB raises it only for a TransactWriteItems that
        # reuses a ClientRequestToken still in flight, which the gateway never sends; a caller
        # that does wants to see it, and "switch to on-demand" would be the wrong advice. Nor
        # the codes of other services in that checker (S3's SlowDown, BandwidthLimitExceeded,
        # EC2ThrottledException), nor PriorRequestNotComplete (a transient failure, see
        # `gateway.retry.TRANSIENT_CODES`).
    }
)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "") or None
    return None


def error_message(exc: BaseException) -> str:
    """AWS's own message of a ClientError, or ``str(exc)``."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message") or exc)
    return str(exc)


def translate(exc: BaseException, operation: str, table: str | None = None) -> GatewayError:
    """A gateway error for ``exc`` (raised by ``operation`` on ``table``), to raise ``from`` it."""
    if isinstance(exc, GatewayError):
        return exc
    where = f"{operation} on table {table!r}" if table else operation
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsError(
            f"No AWS credentials found for {where}. {CREDENTIALS_ADVICE}", operation=operation
        )
    if isinstance(exc, NoRegionError):
        return ConfigError(
            "No AWS region configured: set DYNAMODB_REGION (YAML dynamodb.region) or "
            "AWS_DEFAULT_REGION."
        )
    if isinstance(exc, ParamValidationError):
        return ValidationError(
            f"Invalid parameters for {where}: {exc}. Nothing was sent.", operation=operation
        )
    code = error_code(exc)
    message = error_message(exc)
    if code in _BAD_CREDENTIALS_CODES:
        return CredentialsError(
            f"AWS rejected the credentials for {where} ({code}: {message}). {CREDENTIALS_ADVICE}",
            code=code,
            operation=operation,
        )
    if code in _ACCESS_DENIED_CODES:
        resource = f" on the table {table!r}" if table else ""
        return AccessDeniedError(
            f"Access denied for {where}: the caller's IAM identity needs the permission "
            f"dynamodb:{operation}{resource} (AWS said: {message}). Add it to the role or user "
            "policy, e.g. an Allow statement for that action on arn:aws:dynamodb:*:*:table/"
            f"{table or '<table>'} and its indexes (…/index/*).",
            code=code,
            operation=operation,
        )
    if code == "ValidationException":
        return ValidationError(
            f"DynamoDB rejected {where} as invalid: {message}. Nothing was written. Check the "
            "document against DynamoDB's limits (types, sizes, index key types).",
            code=code,
            operation=operation,
        )
    if code in THROTTLE_CODES:
        return ThrottledError(
            f"DynamoDB throttled {where} ({code}). Switch the table to on-demand capacity, raise "
            "its provisioned capacity, or spread the load over more partition keys.",
            attempts=1,
            elapsed=0.0,
            code=code,
            operation=operation,
        )
    if code == "ResourceNotFoundException":
        return GatewayError(
            f"{where}: the table or index does not exist ({message}).",
            code=code,
            operation=operation,
        )
    if code is None and isinstance(exc, BotoCoreError):
        return ServiceUnavailableError(
            f"DynamoDB could not be reached for {where}: {message}. Check the endpoint URL "
            "(the endpoint_url= passed to DynamoDBService, or the DYNAMODB_ENDPOINT_URL setting "
            "when the service is built by get_database_service / Settings), the region and the "
            "network.",
            code=None,
            operation=operation,
        )
    return GatewayError(f"{where} failed: {code}: {message}", code=code, operation=operation)
