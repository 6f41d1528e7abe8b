"""The codec a profile asks for: protocol, input tensors, label map; errors name the profile's field."""

from __future__ import annotations

from typing import Any

from profiler.codecs.base import Codec
from profiler.codecs.openai import OpenAICodec
from profiler.codecs.predictions import PredictionReader
from profiler.codecs.template import JsonTemplateCodec, TemplateError
from profiler.codecs.tensors import TensorSpec, resolve_specs
from profiler.codecs.v1 import V1RestCodec
from profiler.codecs.v2 import V2RestCodec
from profiler.codecs.v2_grpc import V2GrpcCodec
from profiler.config import GENERATIVE, TargetConfig
from profiler.core.errors import ConfigError
from profiler.dataset import Sample
from profiler.measure.text import TextRule

PROTOCOLS = ("v2-rest", "v2-grpc", "v1-rest", "v1-rest-columnar", "json", "openai-chat", "openai-completions")


def make_codec(protocol: str, **options: Any) -> Codec:
    """The codec for a protocol name from the config; ConfigError for an unknown name."""
    if protocol == "v2-rest":
        return V2RestCodec(**options)
    if protocol == "v2-grpc":
        return V2GrpcCodec(**options)
    if protocol in ("v1-rest", "v1-rest-columnar"):
        return V1RestCodec(form="rows" if protocol == "v1-rest" else "columns", **options)
    if protocol == "json":
        return JsonTemplateCodec(**options)
    if protocol in ("openai-chat", "openai-completions"):
        return OpenAICodec(chat=protocol == "openai-chat", **options)
    raise ConfigError(f"target.protocol: unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def codec_from_config(target: TargetConfig, input_fields: str | list[str], batch_size: int,
                      first: Sample | None = None, rule: TextRule | None = None) -> Codec:
    """The configured codec; template and path errors become ConfigErrors naming the field.

    `first` (the first hold-out sample) fixes the shape of a single input declared without one; `rule` is how
    a generative protocol scores its text.
    """
    if target.protocol in GENERATIVE:
        g = target.generation
        return make_codec(target.protocol, model=target.model, stream=g.stream, include_usage=g.include_usage,
                          max_tokens=g.max_tokens, temperature=g.temperature, stop=g.stop, extra_body=g.extra_body,
                          rule=rule, ready_path=target.ready_path, infer_path=target.infer_path)
    labels: Any = target.labels
    reader = PredictionReader(target.prediction, labels)
    if target.protocol == "json":
        assert target.infer_path is not None and target.response_path is not None
        fields = input_fields if isinstance(input_fields, list) else None
        try:
            return make_codec("json", template=target.request_template, response_path=target.response_path,
                              infer_path=target.infer_path, ready_path=target.ready_path, fields=fields,
                              batch_size=batch_size, reader=reader)
        except TemplateError as exc:
            field = "response_path" if "JSONPath" in str(exc) else "request_template"
            raise ConfigError(f"target.{field}: {exc}") from None
    specs: list[TensorSpec] = (
        [TensorSpec(t.name, t.datatype, tuple(t.shape) if t.shape else None) for t in target.inputs]
        if target.inputs else [TensorSpec(target.input_name, target.datatype)]
    )
    if first is not None:
        try:
            specs = list(resolve_specs(specs, first))
        except ValueError as exc:
            raise ConfigError(f"target.inputs: {exc}") from None
    return make_codec(target.protocol, model=target.model, version=target.version, inputs=specs,
                      output_name=target.output_name, reader=reader)
