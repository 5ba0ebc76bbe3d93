"""Settings: the only place that reads YAML and the environment.

Three forms, one model. Precedence, highest first:

1. keyword arguments: ``Settings(CACHE_BACKEND="redis")``;
2. environment variables, named exactly like the fields (case-sensitive); nested fields
   (``COLLECTIONS``, ``RETRY``, ``COALESCING``) take JSON;
3. a YAML file, passed to :meth:`Settings.from_yaml` or named by the ``GATEWAY_CONFIG``
   environment variable, whose nested keys are flattened onto the fields by one table,
   :data:`YAML_PATHS`;
4. the defaults below.

Everything is validated when the object is built (botocore's ``Config`` does the same) and every
problem is a :class:`~gateway.errors.ConfigError` whose message names the key, where its value came
from and what was expected. Unknown keys are errors at every depth. Nothing is read at import
time and nothing here touches the network.

A password in a URL never leaves this module in clear: ``repr``/``str`` of the settings, error
messages and pydantic-settings' debug log show it as ``***`` (see :func:`redact_url`), while
``settings.REDIS_URL`` itself still returns the real URL for the code that connects.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from gateway.bulk import DEFAULT_MAX_IN_FLIGHT as DEFAULT_BULK_MAX_IN_FLIGHT
from gateway.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_CONFIG_PATH",
    "YAML_PATHS",
    "CachePolicy",
    "CoalescingConfig",
    "CollectionConfig",
    "IndexConfig",
    "ResolvedCachePolicy",
    "RetryConfig",
    "Settings",
    "YamlSettingsSource",
    "redact_url",
]

#: Environment variable naming the YAML configuration file.
ENV_CONFIG_PATH = "GATEWAY_CONFIG"
#: The default configuration shipped with the project, relative to the repository root.
DEFAULT_CONFIG_FILE = "config/gateway.yaml"

DEFAULT_REGION = "us-east-1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_READ_TIMEOUT_S = 5.0
DEFAULT_MAX_POOL_CONNECTIONS = 50
DEFAULT_CACHE_TTL_S = 300.0
DEFAULT_CACHE_NEGATIVE_TTL_S = 30.0
DEFAULT_CACHE_TTL_JITTER = 0.1
DEFAULT_CACHE_MAX_ITEMS = 100_000
DEFAULT_CACHE_MAX_BYTES = 256 * 1024 * 1024
#: Cached list_all / query answers larger than this (approximate bytes) are not stored.
DEFAULT_MAX_QUERY_BYTES = 1024 * 1024
DEFAULT_REDIS_KEY_PREFIX = "gw:"
DEFAULT_REDIS_TIMEOUT_S = 0.05
DEFAULT_REDIS_BREAKER_FAILURES = 5
DEFAULT_REDIS_BREAKER_RESET_S = 5.0
DEFAULT_CACHE_WRITE_INTENT_S = 5.0
#: The gateway's fill deadline (`gateway.gateway.DEFAULT_FILL_DEADLINE_S`): intents outlive it.
DEFAULT_FILL_DEADLINE_S = 2.0
DEFAULT_CACHE_UNREACHABLE_WRITES: Literal["refuse", "accept"] = "refuse"
DEFAULT_QUERY_INVALIDATION: Literal["value", "collection"] = "value"

#: DynamoDB table and index names: 3 to 255 characters of this set.
_NAME_CHARS = r"[A-Za-z0-9_.-]"
_MAX_TABLE_NAME = 255
_MIN_TABLE_NAME = 3

# Keys that would put AWS credentials in a file that is usually committed to a repository.
_CREDENTIAL_KEYS = frozenset({"aws_access_key_id", "aws_secret_access_key", "aws_session_token"})
_CREDENTIALS_HELP = (
    "AWS credentials are never read from the gateway configuration: they come only from the "
    "standard AWS chain (environment variables AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
    "AWS_SESSION_TOKEN, the shared files ~/.aws/credentials and ~/.aws/config with AWS_PROFILE, "
    "or an instance, task or pod role)"
)

# The fields whose values are URLs that may carry a password.
_URL_FIELDS = ("DYNAMODB_ENDPOINT_URL", "REDIS_URL", "DAX_ENDPOINT_URL")
# The fields that arrive from the environment as JSON.
_JSON_FIELDS = ("COLLECTIONS", "RETRY", "COALESCING")

# Set by `Settings.from_yaml` for the duration of one construction; a ContextVar keeps two
# threads (or asyncio tasks) loading different files from seeing each other's path.
_YAML_FILE: ContextVar[Path | None] = ContextVar("gateway_yaml_file", default=None)


# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------

_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|pass|pwd|secret|token)=)[^&#]*")
# `user:password@` without a scheme in front (a malformed URL): mask it all the same.
_LOOSE_USERINFO = re.compile(r"([^\s:/@]*):[^\s@]*@")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``: ``redis://user:***@host:6379/0``.

    Handles the userinfo part (``user:password@``, ``:password@``) and a ``password=`` query
    parameter (redis-py accepts one on ``unix://`` URLs). Never raises: a string that is not a URL
    comes back unchanged, and a malformed URL is still masked as well as it can be parsed.
    """
    if not isinstance(url, str):  # defensive: callers sometimes pass None through
        return url
    scheme_end = url.find("://")
    if scheme_end < 0:
        return _QUERY_SECRET.sub(r"\1***", _LOOSE_USERINFO.sub(r"\1:***@", url))
    start = scheme_end + 3
    # The userinfo ends at the LAST '@' before the query or fragment, so an unencoded '@' in a
    # password is still masked whole.
    end = len(url)
    for sep in ("?", "#"):
        pos = url.find(sep, start)
        if pos >= 0:
            end = min(end, pos)
    at = url.rfind("@", start, end)
    if at >= 0:
        userinfo = url[start:at]
        colon = userinfo.find(":")
        if colon >= 0:
            url = url[: start + colon + 1] + "***" + url[at:]
    return _QUERY_SECRET.sub(r"\1***", url)


# --------------------------------------------------------------------------------------------
# URL validation (messages never echo the URL: it may hold a password)
# --------------------------------------------------------------------------------------------


def _check_url(value: str, schemes: tuple[str, ...], *, host_required: bool = True) -> None:
    """Raise ValueError unless ``value`` is a URL with one of ``schemes`` and a host."""
    want = " or ".join(f"{s}://" for s in schemes)
    if any(ch.isspace() for ch in value):
        raise ValueError("the URL contains whitespace")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if not parts.scheme or "://" not in value:
        raise ValueError(f"not a URL: it does not start with {want}")
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"the scheme {parts.scheme!r} is not {want}")
    if host_required and not parts.hostname:
        raise ValueError("the URL has no host")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError("the port is not a number between 1 and 65535")


def _check_redis_url(value: str) -> None:
    """Raise ValueError unless ``value`` is a URL redis-py's ``from_url`` accepts."""
    parts_scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if parts_scheme == "unix":
        _check_url(value, ("redis", "rediss", "unix"), host_required=False)
        if not urlsplit(value).path:
            raise ValueError("a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
        return
    _check_url(value, ("redis", "rediss", "unix"))
    path = urlsplit(value).path.strip("/")
    if path and not path.isdigit():
        raise ValueError("the path must be a database number, e.g. redis://host:6379/0")


# --------------------------------------------------------------------------------------------
# Nested models
# --------------------------------------------------------------------------------------------

_NESTED_CONFIG = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
IndexName = Annotated[
    str, StringConstraints(min_length=3, max_length=255, pattern=rf"^{_NAME_CHARS}+$")
]
CollectionName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=rf"^{_NAME_CHARS}+$")
]


class IndexConfig(BaseModel):
    """A global secondary index: its partition-key attribute and that attribute's type."""

    model_config = _NESTED_CONFIG

    attribute: str = Field(
        min_length=1,
        max_length=255,
        description="the name of the document attribute the index is keyed on (1-255 chars)",
    )
    type: Literal["S", "N", "B"] = Field(
        default="S",
        description="the attribute's DynamoDB type: S (string), N (number) or B (binary)",
    )


class CachePolicy(BaseModel):
    """One collection's cache policy; ``None`` in a field means "use the global value"."""

    model_config = _NESTED_CONFIG

    enabled: bool = Field(
        default=True, description="true or false: whether this collection is cached"
    )
    ttl_seconds: Seconds | None = Field(
        default=None,
        description="seconds a cached document lives, a number > 0, or null for global",
    )
    negative_ttl_seconds: Seconds | None = Field(
        default=None,
        description="seconds a cached 'not found' lives, a number > 0, or null for global",
    )
    max_items: int | None = Field(
        default=None,
        ge=1,
        description="an integer >= 1 (in-process tier entries), or null for global",
    )
    cache_queries: bool | None = Field(
        default=None,
        description="true or false: cache list_all / query answers, or null for global",
    )


class CollectionConfig(BaseModel):
    """What the gateway knows about one collection (table): its indexes and cache policy."""

    model_config = _NESTED_CONFIG

    indexes: dict[IndexName, IndexConfig] = Field(
        default_factory=dict,
        description=(
            "a mapping of index name (3-255 chars of [A-Za-z0-9_.-]) to "
            "{attribute: <name>, type: S|N|B}"
        ),
    )
    cache: CachePolicy | None = Field(
        default=None,
        description=(
            "null (global policy) or a mapping with enabled, ttl_seconds, "
            "negative_ttl_seconds, max_items, cache_queries"
        ),
    )


class RetryConfig(BaseModel):
    """Retry policy for DynamoDB calls: full-jitter backoff, a deadline and a retry budget.

    The n-th retry sleeps ``random() * min(base_seconds * 2**n, cap_seconds)``; a retry spends
    ``budget_retry_cost`` (``budget_timeout_cost`` after a timeout) tokens from a bucket of
    ``budget_capacity`` that successes refill, so that retries cannot snowball under overload.
    """

    model_config = _NESTED_CONFIG

    max_attempts: int = Field(
        default=8, ge=1, description="an integer >= 1 (attempts, first included)"
    )
    base_seconds: Seconds = Field(default=0.025, description="seconds, a number > 0")
    cap_seconds: Seconds = Field(
        default=2.0, description="seconds, a number > 0 and >= base_seconds"
    )
    deadline_seconds: Seconds = Field(default=10.0, description="seconds, a number > 0")
    budget_capacity: int = Field(
        default=500, ge=0, description="an integer >= 0 (tokens; 0 disables retries)"
    )
    budget_retry_cost: int = Field(
        default=5, ge=1, description="an integer >= 1 (tokens per retry)"
    )
    budget_timeout_cost: int = Field(
        default=10, ge=1, description="an integer >= 1 (tokens per retry after a timeout)"
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryConfig:
        if self.cap_seconds < self.base_seconds:
            raise ValueError("cap_seconds must be >= base_seconds")
        return self


class CoalescingConfig(BaseModel):
    """Request coalescing: concurrent single reads/writes merged into DynamoDB batch calls."""

    model_config = _NESTED_CONFIG

    reads: bool = Field(
        default=True, description="true or false: merge concurrent gets into BatchGetItem"
    )
    # Off by default: BatchWriteItem takes no conditions, so batched saves keep revisions
    # strictly increasing only when one process writes a given document.
    writes: bool = Field(
        default=False, description="true or false: merge concurrent writes into BatchWriteItem"
    )
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="milliseconds a batch waits for company, a number >= 0",
    )
    max_batch_get: int = Field(default=100, ge=1, le=100, description="an integer from 1 to 100")
    max_batch_write: int = Field(default=25, ge=1, le=25, description="an integer from 1 to 25")


@dataclass(frozen=True, slots=True)
class ResolvedCachePolicy:
    """The cache policy in force for one collection: globals overridden by its own policy."""

    enabled: bool
    ttl_s: float
    negative_ttl_s: float
    jitter: float
    max_items: int
    cache_queries: bool


_DEFAULT_COLLECTION = CollectionConfig()


# --------------------------------------------------------------------------------------------
# YAML: the one mapping table, and the source that applies it
# --------------------------------------------------------------------------------------------

#: YAML path -> field name. ``collections``, ``retry`` and ``coalescing`` map whole.
YAML_PATHS: Mapping[tuple[str, ...], str] = MappingProxyType(
    {
        ("provider",): "DATABASE_PROVIDER",
        ("dynamodb", "region"): "DYNAMODB_REGION",
        ("dynamodb", "endpoint_url"): "DYNAMODB_ENDPOINT_URL",
        ("dynamodb", "table_prefix"): "DYNAMODB_TABLE_PREFIX",
        ("dynamodb", "consistent_read"): "DYNAMODB_CONSISTENT_READ",
        ("dynamodb", "connect_timeout_seconds"): "DYNAMODB_CONNECT_TIMEOUT_S",
        ("dynamodb", "read_timeout_seconds"): "DYNAMODB_READ_TIMEOUT_S",
        ("dynamodb", "max_pool_connections"): "DYNAMODB_MAX_POOL_CONNECTIONS",
        ("cache", "backend"): "CACHE_BACKEND",
        ("cache", "ttl_seconds"): "CACHE_TTL_S",
        ("cache", "negative_ttl_seconds"): "CACHE_NEGATIVE_TTL_S",
        ("cache", "ttl_jitter"): "CACHE_TTL_JITTER",
        ("cache", "max_items"): "CACHE_MAX_ITEMS",
        ("cache", "max_bytes"): "CACHE_MAX_BYTES",
        ("cache", "cache_queries"): "CACHE_CACHE_QUERIES",
        ("cache", "max_query_bytes"): "CACHE_MAX_QUERY_BYTES",
        ("cache", "query_invalidation"): "CACHE_QUERY_INVALIDATION",
        ("cache", "redis_url"): "REDIS_URL",
        ("cache", "redis_key_prefix"): "REDIS_KEY_PREFIX",
        ("cache", "redis_timeout_seconds"): "REDIS_TIMEOUT_S",
        ("cache", "breaker_failures"): "REDIS_BREAKER_FAILURES",
        ("cache", "breaker_reset_seconds"): "REDIS_BREAKER_RESET_S",
        ("cache", "write_intent_seconds"): "CACHE_WRITE_INTENT_S",
        ("cache", "unreachable_writes"): "CACHE_UNREACHABLE_WRITES",
        ("cache", "dax_endpoint_url"): "DAX_ENDPOINT_URL",
        ("cache", "streams_invalidation"): "STREAMS_INVALIDATION",
        ("cache", "dax_memory_tier"): "DAX_MEMORY_TIER",
        ("numbers", "native"): "NATIVE_NUMBERS",
        ("collections",): "COLLECTIONS",
        ("retry",): "RETRY",
        ("coalescing",): "COALESCING",
        ("bulk", "max_in_flight"): "BULK_MAX_IN_FLIGHT",
    }
)
_FIELD_YAML_PATH: dict[str, tuple[str, ...]] = {field: path for path, field in YAML_PATHS.items()}
# Every proper prefix of a mapped path is a section: a mapping whose keys are checked.
_YAML_SECTIONS: frozenset[tuple[str, ...]] = frozenset(
    path[:i] for path in YAML_PATHS for i in range(len(path))
)


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path) if path else "(top level)"


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys instead of silently keeping the last."""


def _construct_mapping_no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: let the base constructor report it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictSafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def _load_yaml(path: Path, how: str) -> dict[str, Any]:
    """Parse ``path`` (safe loader, no duplicate keys); ``how`` says who named the file."""
    where = f"YAML file {path} ({how})"
    try:
        with path.open("r", encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_StrictSafeLoader)  # a SafeLoader subclass
    except FileNotFoundError as exc:
        raise ConfigError(f"{where} does not exist; expected the path of a YAML file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{where} is a directory; expected the path of a YAML file") from exc
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        # Build the message from the parts: the default str() can quote file content.
        problem = getattr(exc, "problem", None) or type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML: {problem}{at}") from exc
    if data is None:  # an empty file, or one with only comments: nothing to set
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: the top level is a {_kind(data)}; expected a mapping of sections "
            f"such as 'dynamodb:' and 'cache:'"
        )
    return data


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _find_credentials(node: Any, path: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """Return the path of the first credential-like key anywhere in ``node``, else None."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.strip().lower().replace("-", "_") in _CREDENTIAL_KEYS:
                return (*path, key)
            found = _find_credentials(value, (*path, key))
            if found is not None:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = _find_credentials(value, (*path, index))
            if found is not None:
                return found
    return None


def _flatten(data: dict[Any, Any], where: str) -> dict[str, Any]:
    """Map nested YAML onto flat field names with :data:`YAML_PATHS`; unknown keys are errors."""
    flat: dict[str, Any] = {}

    def walk(node: dict[Any, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = (*prefix, key)
            if not isinstance(key, str):
                raise ConfigError(
                    f"key {_dotted(path)} in {where} is a {_kind(key)}, not a string; "
                    "quote it (YAML reads yes/no/on/off as booleans)"
                )
            if path in YAML_PATHS:
                field = YAML_PATHS[path]
                # `collections:` with every entry commented out is "not set", like a section.
                if value is None and field in _JSON_FIELDS:
                    continue
                flat[field] = value
            elif path in _YAML_SECTIONS:
                if value is None:  # a section whose keys are all commented out
                    continue
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"{_dotted(path)} in {where} is a {_kind(value)}; expected a mapping "
                        f"with keys {', '.join(_section_keys(path))}"
                    )
                walk(value, path)
            else:
                raise ConfigError(_unknown_key_message(path, _section_keys(prefix), where))

    walk(data, ())
    return flat


def _section_keys(prefix: tuple[str, ...]) -> list[str]:
    """The keys allowed directly under the YAML section ``prefix``."""
    depth = len(prefix)
    return sorted({p[depth] for p in YAML_PATHS if len(p) > depth and p[:depth] == prefix})


def _unknown_key_message(path: tuple[Any, ...], allowed: list[str], where: str) -> str:
    name = str(path[-1])
    hint = difflib.get_close_matches(name, allowed, n=1)
    did_you_mean = f" (did you mean {_dotted((*path[:-1], hint[0]))}?)" if hint else ""
    return (
        f"unknown key {_dotted(path)} in {where}{did_you_mean}; "
        f"expected one of: {', '.join(allowed)}"
    )


class YamlSettingsSource(PydanticBaseSettingsSource):
    """Reads the gateway's YAML file and flattens it onto the flat field names.

    The file is the one passed to :meth:`Settings.from_yaml`, else the one named by the
    ``GATEWAY_CONFIG`` environment variable, else there is none and the source is empty.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], path: str | os.PathLike[str] | None = None
    ):
        super().__init__(settings_cls)
        explicit = path if path is not None else _YAML_FILE.get()
        if explicit is not None:
            self.path: Path | None = _absolute(explicit)
            self.how = "passed to Settings.from_yaml"
        elif os.environ.get(ENV_CONFIG_PATH):
            self.path = _absolute(os.environ[ENV_CONFIG_PATH])
            self.how = f"named by environment variable {ENV_CONFIG_PATH}"
        else:
            self.path = None
            self.how = ""

    @property
    def origin(self) -> str:
        """How error messages name this source: ``YAML file /abs/path.yaml``."""
        return f"YAML file {self.path}"

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: the whole file is read at once by ``__call__``."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """Load, check and flatten the file; ``{}`` when there is no file."""
        if self.path is None:
            return {}
        data = _load_yaml(self.path, self.how)
        creds = _find_credentials(data)
        if creds is not None:
            raise ConfigError(
                f"key {_dotted(creds)} in {self.origin} looks like an AWS credential. "
                f"{_CREDENTIALS_HELP}. Remove it from the file."
            )
        flat = _flatten(data, self.origin)
        build = _BUILD.get()
        if build is not None:
            build.record(flat, lambda field: _Origin("yaml", self.origin))
        return flat


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().absolute()


# --------------------------------------------------------------------------------------------
# Provenance: which source supplied which value, for error messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    kind: Literal["keyword", "env", "yaml", "default"]
    detail: str

    def path(self, loc: tuple[Any, ...]) -> tuple[Any, ...]:
        """``loc`` the way the user spelled it in this source (a YAML path for the file)."""
        if self.kind == "yaml" and loc and loc[0] in _FIELD_YAML_PATH:
            return (*_FIELD_YAML_PATH[loc[0]], *loc[1:])
        return loc

    def key(self, loc: tuple[Any, ...]) -> str:
        """``path(loc)`` as a dotted string."""
        return _dotted(self.path(loc))


_DEFAULT_ORIGIN = _Origin("default", "the default value")


class _Provenance:
    """Records, per value path, the highest-priority source that supplied it."""

    def __init__(self) -> None:
        self.origins: dict[tuple[Any, ...], _Origin] = {}

    def record(self, data: Mapping[str, Any], origin_of: Callable[[str], _Origin]) -> None:
        """Record every path in ``data``; sources run highest priority first, so first wins."""
        for field, value in data.items():
            origin = origin_of(field)
            for path in _paths(value, (field,)):
                self.origins.setdefault(path, origin)

    def lookup(self, loc: tuple[Any, ...]) -> _Origin:
        """The origin of the longest recorded prefix of ``loc``."""
        for end in range(len(loc), 0, -1):
            origin = self.origins.get(tuple(loc[:end]))
            if origin is not None:
                return origin
        return _DEFAULT_ORIGIN


def _paths(value: Any, prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))


_BUILD: ContextVar[_Provenance | None] = ContextVar("gateway_settings_build", default=None)


class _RecordingSource(PydanticBaseSettingsSource):
    """Wraps a built-in source to record where each value came from."""

    def __init__(
        self,
        inner: PydanticBaseSettingsSource,
        origin_of: Callable[[str], _Origin],
        check: Callable[[], None] | None = None,
    ):
        super().__init__(inner.settings_cls)
        self.inner = inner
        self.origin_of = origin_of
        self.check = check
        # pydantic-settings keys its per-source debug data by this name.
        self.__name__ = type(inner).__name__

    def _set_current_state(self, state: dict[str, Any]) -> None:
        super()._set_current_state(state)
        self.inner._set_current_state(state)

    def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
        super()._set_settings_sources_data(states)
        self.inner._set_settings_sources_data(states)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Delegate to the wrapped source."""
        return self.inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        """Call the wrapped source and record the origin of what it returned."""
        if self.check is not None:
            self.check()
        data = self.inner()
        build = _BUILD.get()
        if build is not None:
            build.record(data, self.origin_of)
        return data


def _check_env_json(env: Mapping[str, str | None]) -> None:
    """Fail with the variable's name when a JSON-valued environment variable is not JSON."""
    for name in _JSON_FIELDS:
        raw = env.get(name)
        if raw is None:
            continue
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{name} (from environment variable {name}) is not valid JSON "
                f"({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                f"expected a JSON object, e.g. {name}='{_JSON_EXAMPLES[name]}'"
            ) from exc


_JSON_EXAMPLES = {
    "COLLECTIONS": '{"users": {"indexes": {"by_email": {"attribute": "email"}}}}',
    "RETRY": '{"max_attempts": 5, "deadline_seconds": 3}',
    "COALESCING": '{"reads": true, "max_wait_ms": 1}',
}


# --------------------------------------------------------------------------------------------
# Error messages
# --------------------------------------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` from an annotation."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or origin is UnionType:
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _walk(loc: tuple[Any, ...]) -> tuple[FieldInfo | None, type[BaseModel] | None, int]:
    """Follow ``loc`` through the models, from :class:`Settings` down.

    Returns the last field reached, the model at that point (None when it is not a model) and
    how many items of ``loc`` were consumed. Mapping keys (collection and index names) are
    stepped over.
    """
    model: type[BaseModel] | None = Settings
    info: FieldInfo | None = None
    i = 0
    while model is not None and i < len(loc):
        part = loc[i]
        if not isinstance(part, str) or part not in model.model_fields:
            break
        info = model.model_fields[part]
        annotation = _unwrap(info.annotation)
        i += 1
        if get_origin(annotation) is dict:
            if i == len(loc):
                model = None
                break
            annotation = _unwrap(get_args(annotation)[1])
            i += 1
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return info, model, i


def _show(value: Any) -> str:
    """A short, password-free rendering of an offending input value."""
    if isinstance(value, str):
        text = redact_url(value)
        return repr(text if len(text) <= 80 else text[:77] + "...")
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return f"a {_kind(value)}"


def _format_errors(exc: PydanticValidationError, build: _Provenance) -> str:
    lines = [_format_error(error, build) for error in exc.errors()]
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} configuration errors:\n" + "\n".join(f"  - {line}" for line in lines)


def _format_error(error: Any, build: _Provenance) -> str:
    loc = tuple(error["loc"])
    origin = build.lookup(loc)
    key = origin.key(loc)
    info, _, _ = _walk(loc)
    if error["type"] == "extra_forbidden":
        _, parent, consumed = _walk(loc[:-1])
        allowed = sorted(parent.model_fields) if parent and consumed == len(loc) - 1 else []
        if origin.kind == "keyword" and len(loc) == 1:
            if str(loc[0]).strip().lower() in _CREDENTIAL_KEYS:
                return f"unknown keyword argument {loc[0]}: {_CREDENTIALS_HELP}"
            hint = difflib.get_close_matches(str(loc[0]), allowed, n=1)
            did_you_mean = f" (did you mean {hint[0]}?)" if hint else ""
            return (
                f"unknown keyword argument {loc[0]}{did_you_mean}; "
                f"expected one of: {', '.join(allowed)}"
            )
        return _unknown_key_message(origin.path(loc), allowed, origin.detail)
    if loc and loc[-1] == "[key]":  # a bad collection or index name, not a bad value
        loc = loc[:-1]
        key = origin.key(loc)
        info, _, _ = _walk(loc[:-1])
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    # URL fields never echo their input: a malformed URL may not parse well enough to find
    # (and mask) the password in it.
    shown = "input" in error and not (loc and loc[0] in _URL_FIELDS)
    got = f", got {_show(error['input'])}" if shown else ""
    expected = f"; expected {info.description}" if info is not None and info.description else ""
    setting = f" [setting {loc[0]}]" if origin.kind == "yaml" and len(loc) == 1 else ""
    return f"{key} (from {origin.detail}): {message}{got}{expected}{setting}"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


class Settings(BaseSettings):
    """The gateway's configuration: keyword arguments > environment > YAML file > defaults.

    Build it with ``Settings(...)`` (which also reads the environment and the file named by
    ``GATEWAY_CONFIG``) or ``Settings.from_yaml(path, **overrides)``. Any problem raises
    :class:`~gateway.errors.ConfigError`. The object is immutable.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_prefix="",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        validate_default=True,
    )

    # -- contract fields ------------------------------------------------------------------
    DATABASE_PROVIDER: Literal["dynamodb"] = Field(
        default="dynamodb", description="'dynamodb' (the only provider)"
    )
    DYNAMODB_REGION: str = Field(
        default=DEFAULT_REGION,
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$",
        description="an AWS region name such as us-east-1",
    )
    DYNAMODB_ENDPOINT_URL: str | None = Field(
        default=None,
        description="an http:// or https:// URL with a host (e.g. http://localhost:8000), "
        "or null/empty for AWS itself",
    )
    DYNAMODB_TABLE_PREFIX: str = Field(
        default="",
        max_length=_MAX_TABLE_NAME - 1,
        pattern=rf"^{_NAME_CHARS}*$",
        description="up to 254 characters of [A-Za-z0-9_.-], or empty",
    )
    CACHE_BACKEND: Literal["none", "memory", "redis", "tiered", "dax"] = Field(
        default="none", description="one of none, memory, redis, tiered, dax"
    )
    REDIS_URL: str = Field(
        default=DEFAULT_REDIS_URL,
        description="a redis:// or rediss:// (TLS) URL with a host, e.g. "
        "redis://:password@host:6379/0, or unix:///path/to/redis.sock",
    )
    DAX_ENDPOINT_URL: str | None = Field(
        default=None,
        description="a dax:// or daxs:// (TLS) cluster endpoint URL with a host, or null/empty",
    )
    NATIVE_NUMBERS: bool = Field(
        default=False, description="true or false (return int/float instead of Decimal)"
    )
    STREAMS_INVALIDATION: bool = Field(
        default=False,
        description="true or false (follow each collection's DynamoDB stream and apply every "
        "change to the caches)",
    )

    # -- DynamoDB client ------------------------------------------------------------------
    DYNAMODB_CONSISTENT_READ: bool = Field(default=True, description="true or false")
    DYNAMODB_CONNECT_TIMEOUT_S: Seconds = Field(
        default=DEFAULT_CONNECT_TIMEOUT_S, description="seconds, a number > 0"
    )
    DYNAMODB_READ_TIMEOUT_S: Seconds = Field(
        default=DEFAULT_READ_TIMEOUT_S, description="seconds, a number > 0"
    )
    DYNAMODB_MAX_POOL_CONNECTIONS: int = Field(
        default=DEFAULT_MAX_POOL_CONNECTIONS, ge=1, description="an integer >= 1"
    )

    # -- cache ----------------------------------------------------------------------------
    CACHE_TTL_S: Seconds = Field(default=DEFAULT_CACHE_TTL_S, description="seconds, a number > 0")
    CACHE_NEGATIVE_TTL_S: Seconds = Field(
        default=DEFAULT_CACHE_NEGATIVE_TTL_S, description="seconds, a number > 0"
    )
    CACHE_TTL_JITTER: float = Field(
        default=DEFAULT_CACHE_TTL_JITTER,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="a fraction from 0 to 1",
    )
    CACHE_MAX_ITEMS: int = Field(
        default=DEFAULT_CACHE_MAX_ITEMS, ge=1, description="an integer >= 1"
    )
    CACHE_MAX_BYTES: int = Field(
        default=DEFAULT_CACHE_MAX_BYTES, ge=1, description="a number of bytes, an integer >= 1"
    )
    CACHE_CACHE_QUERIES: bool = Field(default=True, description="true or false")
    CACHE_MAX_QUERY_BYTES: int = Field(
        default=DEFAULT_MAX_QUERY_BYTES, ge=1, description="a number of bytes, an integer >= 1"
    )
    CACHE_QUERY_INVALIDATION: Literal["value", "collection"] = Field(
        default=DEFAULT_QUERY_INVALIDATION, description="value or collection"
    )
    REDIS_KEY_PREFIX: str = Field(
        default=DEFAULT_REDIS_KEY_PREFIX,
        max_length=64,
        pattern=r"^\S*$",
        description="up to 64 characters without whitespace",
    )
    REDIS_TIMEOUT_S: Seconds = Field(
        default=DEFAULT_REDIS_TIMEOUT_S, description="seconds, a number > 0"
    )
    REDIS_BREAKER_FAILURES: int = Field(
        default=DEFAULT_REDIS_BREAKER_FAILURES, ge=1, description="an integer >= 1"
    )
    REDIS_BREAKER_RESET_S: Seconds = Field(
        default=DEFAULT_REDIS_BREAKER_RESET_S, description="seconds, a number > 0"
    )
    CACHE_WRITE_INTENT_S: float = Field(
        default=DEFAULT_CACHE_WRITE_INTENT_S,
        gt=DEFAULT_FILL_DEADLINE_S,
        allow_inf_nan=False,
        description=f"seconds, a number > {DEFAULT_FILL_DEADLINE_S:g} (the longest a cache fill "
        "may take)",
    )
    CACHE_UNREACHABLE_WRITES: Literal["refuse", "accept"] = Field(
        default=DEFAULT_CACHE_UNREACHABLE_WRITES, description="refuse or accept"
    )
    DAX_MEMORY_TIER: bool = Field(default=False, description="true or false")

    # -- bulk writes ----------------------------------------------------------------------
    # save_many / delete_many requests in flight at once; each holds an HTTP connection, so
    # it should stay at most DYNAMODB_MAX_POOL_CONNECTIONS (the default 8 leaves 42 of 50).
    BULK_MAX_IN_FLIGHT: int = Field(
        default=DEFAULT_BULK_MAX_IN_FLIGHT,
        ge=1,
        description="an integer >= 1 (1 sends one request at a time)",
    )

    # -- nested ---------------------------------------------------------------------------
    COLLECTIONS: dict[CollectionName, CollectionConfig] = Field(
        default_factory=dict,
        description="a mapping of collection name ([A-Za-z0-9_.-]) to {indexes: ..., cache: ...}",
    )
    RETRY: RetryConfig = Field(
        default=RetryConfig(),
        description="a mapping with max_attempts, base_seconds, cap_seconds, deadline_seconds, "
        "budget_capacity, budget_retry_cost, budget_timeout_cost",
    )
    COALESCING: CoalescingConfig = Field(
        default=CoalescingConfig(),
        description="a mapping with reads, writes, max_wait_ms, max_batch_get, max_batch_write",
    )

    # -- construction ---------------------------------------------------------------------

    def __init__(self, **values: Any) -> None:
        """Build and validate; every problem becomes a ConfigError naming key and source."""
        for name in values:
            if name.strip().lower() in _CREDENTIAL_KEYS:
                raise ConfigError(f"unknown keyword argument {name}: {_CREDENTIALS_HELP}")
        build = _Provenance()
        token = _BUILD.set(build)
        try:
            super().__init__(**values)
        except PydanticValidationError as exc:
            raise ConfigError(_format_errors(exc, build)) from exc
        except SettingsError as exc:  # pragma: no cover - env JSON is pre-checked
            raise ConfigError(f"{exc} (from the environment)") from exc
        finally:
            _BUILD.reset(token)
        self._check_consistency(build)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> Settings:
        """Build from the YAML file at ``path``; keyword ``overrides`` and the environment win.

        ``path`` replaces any file named by ``GATEWAY_CONFIG``.
        """
        token = _YAML_FILE.set(_absolute(path))
        try:
            return cls(**overrides)
        finally:
            _YAML_FILE.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the YAML file; no dotenv, no secrets."""
        env_vars: Mapping[str, str | None] = getattr(env_settings, "env_vars", os.environ)
        return (
            _RecordingSource(init_settings, lambda field: _Origin("keyword", "keyword argument")),
            _RecordingSource(
                env_settings,
                lambda field: _Origin("env", f"environment variable {field}"),
                check=lambda: _check_env_json(env_vars),
            ),
            YamlSettingsSource(settings_cls),
        )

    @classmethod
    def _settings_log_debug(cls, states: dict[str, dict[str, Any]]) -> None:
        """pydantic-settings' opt-in debug log (PYDANTIC_SETTINGS_DEBUG), with URLs redacted."""
        redacted = {
            name: {
                key: redact_url(value) if key in _URL_FIELDS and isinstance(value, str) else value
                for key, value in state.items()
            }
            for name, state in states.items()
        }
        parent = getattr(super(), "_settings_log_debug", None)
        if parent is not None:
            parent(redacted)

    # -- validators -----------------------------------------------------------------------

    @field_validator("DYNAMODB_ENDPOINT_URL", "DAX_ENDPOINT_URL", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: Any) -> Any:
        # `DAX_ENDPOINT_URL=` in a compose file means "not set", not "an empty URL".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("DYNAMODB_ENDPOINT_URL")
    @classmethod
    def _check_dynamodb_endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            _check_url(value, ("http", "https"))
        return value

    @field_validator("DAX_ENDPOINT_URL")
    @classmethod
    def _check_dax_endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            _check_url(value, ("dax", "daxs"))
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _check_redis(cls, value: str) -> str:
        _check_redis_url(value)
        return value

    def _check_consistency(self, build: _Provenance) -> None:
        """Rules that involve more than one field, reported with both keys' origins."""
        if self.CACHE_BACKEND == "dax" and self.DAX_ENDPOINT_URL is None:
            origin = build.lookup(("CACHE_BACKEND",))
            raise ConfigError(
                f"{origin.key(('CACHE_BACKEND',))} (from {origin.detail}) is 'dax' but "
                "DAX_ENDPOINT_URL (YAML cache.dax_endpoint_url) is not set; expected a dax:// "
                "or daxs:// cluster endpoint URL"
            )
        if self.STREAMS_INVALIDATION and self.CACHE_BACKEND in ("none", "dax"):
            origin = build.lookup(("STREAMS_INVALIDATION",))
            raise ConfigError(
                f"{origin.key(('STREAMS_INVALIDATION',))} (from {origin.detail}) is true but "
                f"CACHE_BACKEND is {self.CACHE_BACKEND!r}: "
                + (
                    "there is no cache to keep up to date"
                    if self.CACHE_BACKEND == "none"
                    else "DAX's item cache cannot be told about changes (DAX only sees writes "
                    "made through DAX)"
                )
                + ". Use memory, redis or tiered, or set streams_invalidation: false."
            )
        prefix = self.DYNAMODB_TABLE_PREFIX
        for name in self.COLLECTIONS:
            length = len(prefix) + len(name)
            if not _MIN_TABLE_NAME <= length <= _MAX_TABLE_NAME:
                loc = ("COLLECTIONS", name)
                origin = build.lookup(loc)
                raise ConfigError(
                    f"{origin.key(loc)} (from {origin.detail}): the table name "
                    f"{prefix + name!r} (DYNAMODB_TABLE_PREFIX + collection name) has {length} "
                    f"characters; expected {_MIN_TABLE_NAME} to {_MAX_TABLE_NAME}"
                )

    # -- secrets --------------------------------------------------------------------------

    @staticmethod
    def redacted(url: str) -> str:
        """Same as :func:`redact_url`: ``url`` with any password replaced by ``***``."""
        return redact_url(url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Like pydantic's, with passwords in URLs masked (used by repr, str and rich)."""
        for name, value in super().__repr_args__():
            if name in _URL_FIELDS and isinstance(value, str):
                yield name, redact_url(value)
            else:
                yield name, value

    def redacted_dump(self) -> dict[str, Any]:
        """``model_dump()`` with passwords in URLs masked: safe to log or print."""
        data = self.model_dump()
        for name in _URL_FIELDS:
            if isinstance(data.get(name), str):
                data[name] = redact_url(data[name])
        return data

    # -- per-collection helpers ------------------------------------------------------------

    def collection(self, db_name: str) -> CollectionConfig:
        """The declared configuration of ``db_name``, or an empty one (no indexes, global cache)."""
        return self.COLLECTIONS.get(db_name, _DEFAULT_COLLECTION)

    def cache_policy(self, db_name: str) -> ResolvedCachePolicy:
        """The cache policy for ``db_name``: the globals, overridden by its own ``cache:``."""
        policy = self.collection(db_name).cache or CachePolicy()
        return ResolvedCachePolicy(
            enabled=policy.enabled,
            ttl_s=policy.ttl_seconds if policy.ttl_seconds is not None else self.CACHE_TTL_S,
            negative_ttl_s=(
                policy.negative_ttl_seconds
                if policy.negative_ttl_seconds is not None
                else self.CACHE_NEGATIVE_TTL_S
            ),
            jitter=self.CACHE_TTL_JITTER,
            max_items=policy.max_items if policy.max_items is not None else self.CACHE_MAX_ITEMS,
            cache_queries=(
                policy.cache_queries
                if policy.cache_queries is not None
                else self.CACHE_CACHE_QUERIES
            ),
        )
