"""DAX's expressions (CBOR S-expressions) back into DynamoDB expression strings.

The DAX client parses each expression and sends ``[1, spec, [values...]]`` (a projection:
``[1, [paths...]]``): ``spec`` is a tree of ``[function, args...]`` arrays, a document path is
``[18, name, name-or-ordinal, ...]`` with ``#name`` placeholders already substituted, and a
value is ``[17, i]``, the i-th entry of the expression's own value list. Every expression is
self-contained, so ``ExpressionAttributeNames`` / ``ExpressionAttributeValues`` sent beside them
are not needed.

`Translator` turns them back into text with its own placeholders (``#n0``, ``:v0``...), shared
by every expression of one request, so that any attribute name (a reserved word, a dot in a
name) survives the round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.dax_emulator.cbor import Ordinal, decode_one
from gateway.dax_emulator.codec import BadRequest, Path, path_elements, to_attribute_value

# Function codes of DAX's expression encoding.
EQ, NE, LT, GE, GT, LE = range(6)
AND, OR, NOT, BETWEEN, IN = 6, 7, 8, 9, 10
FUNCTIONS = {
    11: "attribute_exists",
    12: "attribute_not_exists",
    13: "attribute_type",
    14: "begins_with",
    15: "contains",
    16: "size",
    23: "if_not_exists",
    24: "list_append",
}
COMPARATORS = {EQ: "=", NE: "<>", LT: "<", GE: ">=", GT: ">", LE: "<="}
VARIABLE, DOCUMENT_PATH = 17, 18
SET, ADD, DELETE, REMOVE = 19, 20, 21, 22
PLUS, MINUS = 25, 26

# Precedence levels of the rendered text (parentheses are added below a parent's level).
_OR, _AND, _NOT, _ATOM = 0, 1, 2, 3
_MAX_DEPTH = 200


class Translator:
    """Placeholders for one request's expressions, and the text of each."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._name_of: dict[str, str] = {}

    # -- public ---------------------------------------------------------------------------

    def condition(self, blob: Any) -> str:
        """A condition, key condition or filter expression."""
        spec, values = self._unpack(blob, with_values=True)
        text, _ = self._condition(spec, values, 0)
        return text

    def update(self, blob: Any) -> str:
        spec, values = self._unpack(blob, with_values=True)
        if not isinstance(spec, list) or not spec:
            raise BadRequest("an update expression must list actions")
        sections: dict[str, list[str]] = {"SET": [], "REMOVE": [], "ADD": [], "DELETE": []}
        for action in spec:
            if not isinstance(action, list) or not action:
                raise BadRequest("bad update action")
            code = action[0]
            if code == SET and len(action) == 3:
                target = self._path(action[1])
                sections["SET"].append(f"{target} = {self._set_value(action[2], values, 0)}")
            elif code == REMOVE and len(action) == 2:
                sections["REMOVE"].append(self._path(action[1]))
            elif code in (ADD, DELETE) and len(action) == 3:
                name = "ADD" if code == ADD else "DELETE"
                sections[name].append(
                    f"{self._path(action[1])} {self._operand(action[2], values, 0)}"
                )
            else:
                raise BadRequest(f"bad update action {code!r}")
        return " ".join(f"{k} {', '.join(v)}" for k, v in sections.items() if v)

    def projection(self, blob: Any) -> tuple[str, list[Path]]:
        """The projection text and its paths, in the order of the client's ordinals."""
        spec, _ = self._unpack(blob, with_values=False)
        if not isinstance(spec, list) or not spec:
            raise BadRequest("a projection must list paths")
        paths = [self._path_elements(p) for p in spec]
        return ", ".join(self._path_text(p) for p in paths), paths

    def attribute_names(self) -> dict[str, str]:
        return dict(self.names)

    # -- internals ------------------------------------------------------------------------

    def _unpack(self, blob: Any, *, with_values: bool) -> tuple[Any, list[Any]]:
        if not isinstance(blob, bytes):
            raise BadRequest("an expression must be a byte string")
        try:
            decoded = decode_one(blob)
        except Exception as exc:
            raise BadRequest(f"bad expression encoding: {exc}") from None
        size = 3 if with_values else 2
        if not isinstance(decoded, list) or len(decoded) != size or decoded[0] != 1:
            raise BadRequest("unsupported expression encoding")
        values = decoded[2] if with_values else []
        if not isinstance(values, list):
            raise BadRequest("an expression's values must be an array")
        return decoded[1], values

    def _value(self, index: Any, values: Sequence[Any]) -> str:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(values):
            raise BadRequest("an expression refers to a value it does not carry")
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = to_attribute_value(values[index])
        return placeholder

    def _name(self, name: str) -> str:
        placeholder = self._name_of.get(name)
        if placeholder is None:
            placeholder = f"#n{len(self._name_of)}"
            self._name_of[name] = placeholder
            self.names[placeholder] = name
        return placeholder

    def _path_elements(self, node: Any) -> Path:
        if not isinstance(node, list) or len(node) < 2 or node[0] != DOCUMENT_PATH:
            raise BadRequest("expected a document path")
        if not isinstance(node[1], str):
            raise BadRequest("a document path starts with a name")
        return path_elements(node[1:])

    def _path_text(self, path: Path) -> str:
        text = ""
        for element in path:
            if isinstance(element, int):
                text += f"[{element}]"
            else:
                text += ("." if text else "") + self._name(element)
        return text

    def _path(self, node: Any) -> str:
        return self._path_text(self._path_elements(node))

    def _operand(self, node: Any, values: Sequence[Any], depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise BadRequest("expression nested too deeply")
        if not isinstance(node, list) or not node:
            raise BadRequest("bad operand")
        code = node[0]
        if code == DOCUMENT_PATH:
            return self._path(node)
        if code == VARIABLE and len(node) == 2:
            return self._value(node[1], values)
        if code in FUNCTIONS:
            args = ", ".join(self._operand(arg, values, depth + 1) for arg in node[1:])
            return f"{FUNCTIONS[code]}({args})"
        if code in (PLUS, MINUS):
            return self._set_value(node, values, depth + 1)
        raise BadRequest(f"bad operand {code!r}")

    def _set_value(self, node: Any, values: Sequence[Any], depth: int) -> str:
        if isinstance(node, list) and len(node) == 3 and node[0] in (PLUS, MINUS):
            sign = "+" if node[0] == PLUS else "-"
            left = self._operand(node[1], values, depth + 1)
            right = self._operand(node[2], values, depth + 1)
            return f"{left} {sign} {right}"
        return self._operand(node, values, depth + 1)

    def _condition(self, node: Any, values: Sequence[Any], depth: int) -> tuple[str, int]:
        if depth > _MAX_DEPTH:
            raise BadRequest("expression nested too deeply")
        if not isinstance(node, list) or not node or isinstance(node[0], (list, Ordinal)):
            raise BadRequest("bad condition")
        code, args = node[0], node[1:]
        if code in COMPARATORS and len(args) == 2:
            left = self._operand(args[0], values, depth + 1)
            right = self._operand(args[1], values, depth + 1)
            return f"{left} {COMPARATORS[code]} {right}", _ATOM
        if code in (AND, OR) and len(args) == 2:
            level = _AND if code == AND else _OR
            parts = []
            for arg in args:
                text, arg_level = self._condition(arg, values, depth + 1)
                parts.append(f"({text})" if arg_level < level else text)
            return f" {'AND' if code == AND else 'OR'} ".join(parts), level
        if code == NOT and len(args) == 1:
            text, arg_level = self._condition(args[0], values, depth + 1)
            return f"NOT {f'({text})' if arg_level < _ATOM else text}", _NOT
        if code == BETWEEN and len(args) == 3:
            a, b, c = (self._operand(arg, values, depth + 1) for arg in args)
            return f"{a} BETWEEN {b} AND {c}", _ATOM
        if code == IN and len(args) == 2 and isinstance(args[1], list) and args[1]:
            subject = self._operand(args[0], values, depth + 1)
            options = ", ".join(self._operand(arg, values, depth + 1) for arg in args[1])
            return f"{subject} IN ({options})", _ATOM
        if code in FUNCTIONS:
            return self._operand(node, values, depth + 1), _ATOM
        raise BadRequest(f"bad condition function {code!r}")
