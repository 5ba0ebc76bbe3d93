"""DynamoDB's JSON protocol for the data-plane client, without botocore's walk of every value.

botocore serializes a request by walking the parameters against the API model, value by value,
then ``json.dumps`` the copy it built; it parses an answer by ``json.loads`` and a second walk
that rebuilds every dict. For DynamoDB's data plane both walks are almost always the identity:
the parameters are already JSON (AttributeValues from boto3's ``TypeSerializer``), and so are
the answers. Only binary values (``B``, ``BS``: base64 on the wire) and timestamps need
converting. Measured (one BatchWriteItem of 25 items of 1 KB): 692 us of client CPU to serialize
through botocore against 276 us here; one BatchGetItem answer of 100 revisions: 1,378 us to
parse against 111 us. ``save_many`` of 20,000 documents on dynalite: 15-25 % more items/s.

The contract, and where it differs from botocore's:
* Requests: only operations whose input model holds nothing but structures, lists, maps,
  strings, integers, longs, booleans and blobs, with no renamed member and no host prefix,
  take the short path (DynamoDB's data plane does). The parameters must be in the wire form
  boto3's ``TypeSerializer`` makes, with only members the model knows: ``bytes`` only as the
  value of a blob (``B``, an element of ``BS``), and every blob ``bytes``. Then the body is
  ``json.dumps`` of the parameters with ``bytes`` as base64, byte for byte what botocore sends
  (tests/test_json_protocol.py compares them). Outside that contract the two differ: a ``str``
  blob is sent as it is (botocore base64-encodes it), ``bytes`` in a string member are sent as
  base64 and an unknown member is sent (botocore raises). A value JSON cannot hold (a
  ``Decimal``, say) sends the whole request through botocore, which fails as it always did.
  `gateway.wire_items` is the only caller, and keeps to the contract.
* Answers: any answer that is not a success (status 300 and up: errors, with their codes,
  messages, ``CancellationReasons`` and condition-check items), whose body names a ``"B"`` or
  ``"BS"`` anywhere (binary values to decode; a string that merely contains the text takes the
  slow path too, which is only slower) or that is not a JSON object is parsed by botocore whole,
  as are the members that hold a timestamp or a renamed member (from a body of just those
  members). The rest is ``json.loads``'s, in botocore's order of members, with its
  ``ResponseMetadata``. botocore drops nulls and members the model does not know at every
  level; here only at the top level (DynamoDB, moto and dynalite send neither deeper down).
* `install` leaves a client untouched (returns False) if botocore's serializer or parser
  factory is not where this version keeps them. tests/test_json_protocol.py compares both paths
  on the installed botocore, so a change of botocore's behaviour shows there.

Only the plain data-plane client of `gateway.dynamodb.DynamoDBService` gets it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Final

from botocore.model import OperationModel, Shape
from botocore.parsers import JSONParser
from botocore.serialize import JSONSerializer

#: Shapes whose values botocore's JSON serializer copies as they are (blobs: base64 of bytes).
_REQUEST_TYPES: Final = frozenset(
    {"structure", "list", "map", "string", "integer", "long", "boolean", "blob"}
)
#: Shapes whose values botocore's JSON parser returns as ``json.loads`` gives them (it has no
#: handler for numbers: ``ConsumedCapacity``'s doubles come back as the JSON had them).
_ANSWER_TYPES: Final = frozenset(
    {"structure", "list", "map", "string", "integer", "long", "boolean", "double", "float"}
)
#: The members holding binary values: where a blob may be in an answer (the body is checked
#: for these keys, and parsed by botocore when one is there).
_BINARY_MEMBERS: Final = frozenset({"B", "BS"})


def _base64(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON: {type(value).__name__}")


def _copied_as_is(shape: Shape, types: frozenset[str], seen: set[str], in_binary: bool) -> bool:
    """True if botocore sends (parses) every value of ``shape`` unchanged. ``in_binary``: the
    value sits under a ``B`` / ``BS`` member, where a blob is allowed in an answer."""
    if shape.type_name == "blob":
        return "blob" in types or in_binary
    if shape.type_name not in types:
        return False
    key = f"{shape.name}/{in_binary}"
    if key in seen:  # a recursive shape (AttributeValue): decided where it started
        return True
    seen.add(key)
    if shape.type_name == "structure":
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            if member.serialization.get("name", name) != name:
                return False
            if not _copied_as_is(member, types, seen, name in _BINARY_MEMBERS):
                return False
        return True
    if shape.type_name == "list":
        return _copied_as_is(shape.member, types, seen, in_binary)  # type: ignore[attr-defined]
    if shape.type_name == "map":
        key, value = shape.key, shape.value  # type: ignore[attr-defined]
        return _copied_as_is(key, types, seen, False) and _copied_as_is(value, types, seen, False)
    return True


def request_copied_as_is(operation: OperationModel) -> bool:
    """True if botocore's JSON body for ``operation`` is ``json.dumps`` of its parameters."""
    shape = operation.input_shape
    if operation.endpoint and operation.endpoint.get("hostPrefix"):
        return False
    return shape is None or _copied_as_is(shape, _REQUEST_TYPES, set(), False)


@dataclass(frozen=True)
class AnswerPlan:
    """How an operation's successful answer is parsed: ``walked`` members by botocore, the
    rest as ``json.loads`` gives them; ``members`` in the model's order."""

    members: tuple[str, ...]
    walked: frozenset[str]


def answer_plan(shape: Shape | None) -> AnswerPlan | None:
    """The plan for answers of ``shape`` (None: botocore parses them whole)."""
    if shape is None or shape.type_name != "structure" or shape.serialization.get("eventstream"):
        return None
    members: dict[str, Shape] = shape.members  # type: ignore[attr-defined]
    walked = frozenset(
        name
        for name, member in members.items()
        if member.serialization.get("name", name) != name
        or not _copied_as_is(member, _ANSWER_TYPES, set(), name in _BINARY_MEMBERS)
    )
    return AnswerPlan(tuple(members), walked)


class FastJSONSerializer:
    """botocore's `JSONSerializer`, with the body made by one ``json.dumps`` where the
    operation's model allows (see the module docstring)."""

    def __init__(self, botocore_serializer: JSONSerializer) -> None:
        self._botocore = botocore_serializer
        self._as_is: dict[str, bool] = {}

    def serialize_to_request(
        self, parameters: dict[str, Any], operation_model: OperationModel
    ) -> dict[str, Any]:
        name = operation_model.name
        as_is = self._as_is.get(name)
        if as_is is None:
            as_is = self._as_is[name] = request_copied_as_is(operation_model)
        if as_is:
            try:
                body = json.dumps(parameters, default=_base64).encode("utf-8")
            except (TypeError, ValueError):
                pass  # a value JSON cannot hold as it is: botocore's walk decides
            else:
                # Everything but the body (method, headers, target) as botocore makes it.
                request: dict[str, Any] = self._botocore.serialize_to_request({}, operation_model)
                request["body"] = body
                return request
        return self._botocore.serialize_to_request(parameters, operation_model)


class FastJSONParser:
    """botocore's `JSONParser`, with successful answers taken from one ``json.loads`` where
    the model allows (see the module docstring)."""

    def __init__(self, botocore_parser: JSONParser) -> None:
        self._botocore = botocore_parser
        self._plans: dict[str, AnswerPlan | None] = {}

    def parse(self, response: dict[str, Any], shape: Shape | None) -> Any:
        plan = self._plan(shape)
        body = response["body"]
        if plan is None or response["status_code"] >= 300 or b'"B"' in body or b'"BS"' in body:
            return self._botocore.parse(response, shape)
        try:
            raw = json.loads(body.decode("utf-8")) if body else {}
        except ValueError:  # not UTF-8 (botocore raises), not JSON (botocore has its ways)
            return self._botocore.parse(response, shape)
        if not isinstance(raw, dict):
            return self._botocore.parse(response, shape)
        walked = {name: raw[name] for name in plan.walked if name in raw}
        # botocore makes ResponseMetadata and the members that need converting.
        walked_body = json.dumps(walked).encode() if walked else b"{}"
        converted = self._botocore.parse({**response, "body": walked_body}, shape)
        parsed: dict[str, Any] = {}
        for name in plan.members:  # in botocore's order
            value = converted.get(name) if name in plan.walked else raw.get(name)
            if value is not None:
                parsed[name] = value
        parsed["ResponseMetadata"] = converted["ResponseMetadata"]
        return parsed

    def _plan(self, shape: Shape | None) -> AnswerPlan | None:
        if shape is None:
            return None
        name = shape.name
        if name not in self._plans:
            self._plans[name] = answer_plan(shape)
        return self._plans[name]


class _ParserFactory:
    """Wraps botocore's parser factory: the JSON protocol's parser is a `FastJSONParser`."""

    def __init__(self, botocore_factory: Any) -> None:
        self._botocore = botocore_factory
        # Made on first use; two threads racing both make one, and either is as good (the
        # parsers keep nothing between answers but their plans, which come out the same).
        self._json: FastJSONParser | None = None

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name != "json":
            return self._botocore.create_parser(protocol_name)
        if self._json is None:
            parser = self._botocore.create_parser(protocol_name)
            if not isinstance(parser, JSONParser):
                return parser
            self._json = FastJSONParser(parser)
        return self._json


def install(client: Any) -> bool:
    """Give a botocore client of a JSON-protocol service the short paths; False (and the
    client left as it was) if its serializer or response parser factory is not where this
    version of botocore keeps them."""
    serializer = getattr(client, "_serializer", None)
    endpoint = getattr(client, "_endpoint", None)
    factory = getattr(endpoint, "_response_parser_factory", None)
    if type(serializer) is not JSONSerializer or not callable(
        getattr(factory, "create_parser", None)
    ):
        return False
    client._serializer = FastJSONSerializer(serializer)
    endpoint._response_parser_factory = _ParserFactory(factory)  # type: ignore[union-attr]
    return True


def installed(client: Any) -> bool:
    """True if `install` took on ``client``."""
    return isinstance(getattr(client, "_serializer", None), FastJSONSerializer)


__all__ = [
    "AnswerPlan",
    "FastJSONParser",
    "FastJSONSerializer",
    "answer_plan",
    "install",
    "installed",
    "request_copied_as_is",
]
