"""gateway: a fast, correct cache in front of Amazon DynamoDB.

The public names are those documented in docs/api.md; nothing is loaded or connected at import
time.
"""

from gateway.config import Settings
from gateway.dynamodb import DynamoDBService
from gateway.errors import (
    AccessDeniedError,
    ConfigError,
    ConflictError,
    CredentialsError,
    GatewayError,
    ServiceUnavailableError,
    ThrottledError,
    ValidationError,
)
from gateway.factory import get_database_service
from gateway.service import ABSENT, DatabaseService, SaveResult

__version__ = "0.1.0"

__all__ = [
    "ABSENT",
    "AccessDeniedError",
    "ConfigError",
    "ConflictError",
    "CredentialsError",
    "DatabaseService",
    "DynamoDBService",
    "GatewayError",
    "SaveResult",
    "ServiceUnavailableError",
    "Settings",
    "ThrottledError",
    "ValidationError",
    "get_database_service",
]
