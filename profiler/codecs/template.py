"""Any JSON API: a request body template filled from each sample, and a JSONPath that picks the prediction.

Template language: any JSON value. A string that is exactly one placeholder, `"{{inputs}}"`, is
replaced by the value itself (a list stays a list, a number a number); placeholders inside a longer
string, `"id-{{id}}"`, are replaced by their text. Placeholders:

- `inputs`: the sample's input values (a list); `inputs[i]`: one of them
- `id`: the sample id
- a dataset input field name (when `dataset.inputs` lists field names): that field's value
- `rows`, `ids`: the lists of `inputs` and `id` over every sample of the request (batch_size > 1)

The response path is JSONPath as jsonpath-ng reads it (`$.label`, `predictions[0].class`,
`predictions[*].class`); it must yield one value per sample, or one list of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as parse_jsonpath

from profiler.codecs.base import loads
from profiler.codecs.predictions import PredictionReader, nested_rows
from profiler.codecs.tensors import TensorSpec, split_sample
from profiler.core.errors import DatasetError, DecodeError
from profiler.dataset import Sample

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_NAME = re.compile(r"^(?P<name>[A-Za-z_][\w\-]*)(?:\[(?P<index>\d+)\])?$")
BATCH_NAMES = ("rows", "ids")

Getter = Callable[[Sequence[Sample], list[list[Any]]], Any]


class TemplateError(ValueError):
    """A malformed template or response path; the message names the problem."""


class JsonTemplateCodec:
    """Fills a JSON body template per request and reads predictions with a JSONPath expression."""

    name = "json"
    content_type = "application/json"

    def __init__(
        self,
        template: Any,
        response_path: str,
        infer_path: str,
        *,
        ready_path: str | None = None,
        fields: Sequence[str] | None = None,
        batch_size: int = 1,
        datatype: str | None = None,
        reader: PredictionReader | None = None,
    ) -> None:
        self.infer_path = infer_path
        self.ready_paths: tuple[str, ...] = (ready_path,) if ready_path else ()
        self._fields = {name: i for i, name in enumerate(fields or ())}
        self._used: set[str] = set()
        self._build = self._compile(template)
        if batch_size > 1 and not self._used & set(BATCH_NAMES):
            raise TemplateError("with batch_size > 1 the template needs {{rows}} (or {{ids}}) to carry every sample")
        if batch_size == 1 and not self._used:
            raise TemplateError("the template has no placeholder, so every request would be the same")
        try:
            self._path = parse_jsonpath(response_path)
        except (JSONPathError, ValueError, TypeError, AttributeError) as exc:
            raise TemplateError(f"not a JSONPath expression {response_path!r}: {exc}") from None
        self._spec = TensorSpec("inputs", datatype) if datatype else None
        self.reader = reader or PredictionReader()

    def _compile(self, node: Any) -> Callable[[Sequence[Sample], list[list[Any]]], Any]:
        if isinstance(node, dict):
            items = [(str(k), self._compile(v)) for k, v in node.items()]
            return lambda s, v: {k: build(s, v) for k, build in items}
        if isinstance(node, list):
            parts = [self._compile(v) for v in node]
            return lambda s, v: [build(s, v) for build in parts]
        if isinstance(node, str):
            return self._compile_text(node)
        return lambda s, v: node

    def _compile_text(self, text: str) -> Callable[[Sequence[Sample], list[list[Any]]], Any]:
        if "{{" not in text and "}}" not in text:
            return lambda s, v: text
        whole = _PLACEHOLDER.fullmatch(text)
        if whole:
            return self._getter(whole.group(1))
        pieces: list[str | Getter] = []
        last = 0
        for match in _PLACEHOLDER.finditer(text):
            pieces.append(text[last:match.start()])
            pieces.append(self._getter(match.group(1)))
            last = match.end()
        pieces.append(text[last:])
        if any("{{" in p or "}}" in p for p in pieces if isinstance(p, str)):
            raise TemplateError(f"unbalanced braces in {text!r}")

        def render(s: Sequence[Sample], v: list[list[Any]]) -> str:
            out = []
            for piece in pieces:
                if isinstance(piece, str):
                    out.append(piece)
                else:
                    value = piece(s, v)
                    out.append(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
            return "".join(out)

        return render

    def _getter(self, expression: str) -> Getter:
        match = _NAME.match(expression)
        if not match:
            raise TemplateError(f"not a placeholder name: {{{{{expression}}}}}")
        name, index = match.group("name"), match.group("index")
        self._used.add(name)
        if name == "id":
            return lambda s, v: s[0].id
        if name == "ids":
            return lambda s, v: [x.id for x in s]
        if name == "rows":
            return lambda s, v: v
        if name == "inputs":
            if index is None:
                return lambda s, v: v[0]
            i = int(index)
            return lambda s, v: _item(s[0], v[0], i)
        if name in self._fields:
            position = self._fields[name]
            return lambda s, v: v[0][position]
        known = ", ".join(["inputs", "inputs[i]", "id", "rows", "ids", *self._fields])
        raise TemplateError(f"unknown placeholder {{{{{expression}}}}}; known: {known}")

    def encode(self, samples: Sequence[Sample]) -> bytes:
        """The filled template as compact JSON."""
        if not samples:
            raise ValueError("encode needs at least one sample")
        if self._spec is not None:
            spec = TensorSpec(self._spec.name, self._spec.datatype, (len(samples[0].inputs),))
            values = [split_sample(s, (spec,))[0] for s in samples]
        else:
            values = [list(s.inputs) for s in samples]
        return json.dumps(self._build(samples, values), separators=(",", ":")).encode()

    def request_id(self, samples: Sequence[Sample]) -> str | None:
        """None: a template carries `{{id}}` where the user puts it, so answers are not checked against one."""
        return None

    def decode(self, body: bytes, count: int, request_id: str | None = None) -> list[Any]:
        """The values the response path selects: one per sample, or a single list of them."""
        try:
            document = loads(body)
        except ValueError as exc:
            raise DecodeError(f"response is not JSON: {exc}") from None
        found = [m.value for m in self._path.find(document)]
        if not found:
            raise DecodeError(f"response path {str(self._path)!r} matched nothing")
        if len(found) == 1 and isinstance(found[0], list) and (count > 1 or _all_scalars(found[0]) is False):
            found = found[0]
        return self.reader.read(nested_rows(found, count) if len(found) == count else found, count)


def _item(sample: Sample, values: list[Any], index: int) -> Any:
    if index >= len(values):
        raise DatasetError(f"{sample.where}: the template asks for inputs[{index}], it has {len(values)}")
    return values[index]


def _all_scalars(values: list[Any]) -> bool:
    return not any(isinstance(v, (list, dict)) for v in values)
