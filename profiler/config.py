"""The run's configuration: one YAML file, validated once, with errors that name file, line and field."""

from __future__ import annotations

import math
import os
import re
import select
import stat
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from profiler.core.errors import ConfigError
from profiler.core.objects import URL_SCHEMES, is_url
from profiler.core.redact import redact_text, redact_url
from profiler.core.url import TargetUrl, UrlError, check_request_path, parse_target_url
from profiler.judge.catalogue import has_test, normalise_metric
from profiler.judge.verdict import ChangeBound, Gate
from profiler.schedule import MAX_RATE_RPS, Stage, concurrency_levels, plan, plan_closed, ramp_rates

Protocol = Literal["v2-rest", "v2-grpc", "v1-rest", "v1-rest-columnar", "json", "openai-chat", "openai-completions"]
"""Wire protocols the codecs speak (docs/protocols.md)."""

Datatype = Literal["FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES"]
"""Input tensor datatypes (Open Inference Protocol names)."""

HISTORY_FILE = "profiler-history.sqlite"
"""The run history's file name when history.path is not given: it sits next to the report."""



def _usable_path(value: Path) -> Path:
    text = str(value)
    if "\x00" in text:
        raise ValueError("a path cannot hold a NUL character")
    if text in ("", "."):
        raise ValueError("the path is empty")
    if len(text) > 4096:
        raise ValueError("the path is longer than 4096 characters")
    return value


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", value):
        raise ValueError(f"{value[:60]!r} is not an environment variable name (letters, digits and _)")
    return value


FilePath = Annotated[Path, AfterValidator(_usable_path)]
"""A path in a profile: not empty, no NUL (which no system call takes)."""
EnvName = Annotated[str, AfterValidator(_env_name)]
"""The name of an environment variable."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSource(_Strict):
    """Where a secret is read at run time: an environment variable or a mounted file, never the value itself."""

    env: EnvName | None = None
    file: FilePath | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' (a variable name) or 'file' (a path)")
        return self


class TensorConfig(_Strict):
    """One input tensor: name, datatype and per-sample shape (no batch dimension)."""

    name: str
    datatype: Datatype = "FP32"
    shape: list[Annotated[int, Field(ge=1)]] | None = None
    """Elements per sample in this tensor; omitted for a single input: all the sample's values."""


class GenerationConfig(_Strict):
    """protocol openai-chat / openai-completions: what each request asks the model to generate."""

    stream: bool = True
    """Ask for server-sent events (`stream: true`): token timings (TTFT, inter-token latency, TPOT)."""
    include_usage: bool = True
    """Streaming: ask for `stream_options.include_usage`, the token counts in the last event (else counted)."""
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    temperature: Annotated[float, Field(ge=0, le=10)] = 0.0
    stop: list[str] | None = None
    extra_body: dict[str, Any] = {}
    """More request fields, sent as given (top_p, seed, ignore_eos, ...); they cannot replace the fields above."""

    @field_validator("extra_body")
    @classmethod
    def _no_override(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = {"model", "messages", "prompt", "stream", "stream_options", "max_tokens", "temperature", "stop"}
        clash = sorted(owned & set(value))
        if clash:
            raise ValueError(f"{clash[0]!r} is set by the profile's own fields, not extra_body")
        return value


GENERATIVE = ("openai-chat", "openai-completions")
"""The protocols of generative models: text in, text out, token timings when streamed."""


class TargetConfig(_Strict):
    """Where the served model is and how to talk to it."""

    url: str
    protocol: Protocol = "v2-rest"
    model: str
    version: str | None = None
    input_name: str = "input-0"
    datatype: Datatype = "FP32"
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    ready_timeout_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64
    inputs: Annotated[list[TensorConfig], Field(min_length=1)] | None = None
    """Several input tensors, filled in order from each sample's values (replaces input_name/datatype)."""
    output_name: str | None = None
    """The output (V2), output key (V1 columnar / object predictions) holding the prediction; default the first."""
    prediction: Literal["auto", "value", "argmax"] = "auto"
    """auto: one value per sample is the class, a row of values is a probability vector (argmax)."""
    labels: list[str] | dict[int | str, str] | None = None
    """Label map: class index (or value) -> class name as the hold-out file spells it."""
    request_template: Any = None
    """protocol json: the request body template (JSON value with {{placeholders}})."""
    response_path: str | None = None
    """protocol json: the JSONPath of the prediction in the response, e.g. $.label."""
    infer_path: str | None = None
    """protocol json: the path to POST to, e.g. /predict; openai-*: instead of /v1/chat/completions or
    /v1/completions (a gateway's prefix, say)."""
    ready_path: str | None = None
    """protocol json: a path that answers 200 when the model is ready (default: no readiness check); openai-*:
    instead of /v1/models."""
    headers: dict[str, str | SecretSource] = {}
    """Extra request headers (gRPC metadata): a literal value, or {env: VAR} / {file: PATH} for a secret."""
    bearer_token: SecretSource | None = None
    """Sent as 'Authorization: Bearer <token>', read from an environment variable or a file."""
    tls_ca_file: FilePath | None = None
    """gRPC over TLS (grpcs://): the CA bundle that signed the server's certificate (default: system roots)."""
    keepalive_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    """gRPC keepalive ping interval on the long-lived channel."""
    check_metadata: bool = True
    """V2: fetch the model's metadata and check the inputs against it before the load starts."""
    generation: GenerationConfig = GenerationConfig()
    """openai-chat / openai-completions: streaming, max tokens, temperature, stop, extra body fields."""

    @field_validator("url")
    @classmethod
    def _target_url(cls, value: str) -> str:
        try:
            parse_target_url(value)
        except UrlError as exc:
            raise ValueError(f"the URL {exc}") from None
        return value

    @field_validator("infer_path", "ready_path")
    @classmethod
    def _request_path(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_request_path(value)
            except UrlError as exc:
                raise ValueError(f"the path {exc}") from None
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str | SecretSource]) -> dict[str, str | SecretSource]:
        for name, header in value.items():
            check_header(name, header if isinstance(header, str) else None)
        return value

    @property
    def endpoint(self) -> TargetUrl:
        """The URL parsed: scheme, host, port, base path, query string and credentials (core.url)."""
        return parse_target_url(self.url)

    @model_validator(mode="after")
    def _protocol_fits(self) -> TargetConfig:
        endpoint = self.endpoint
        if self.protocol == "v2-grpc" and not endpoint.grpc:
            raise ValueError(f"protocol v2-grpc needs a grpc:// or grpcs:// url (grpc://host:8001), got "
                             f"{endpoint.redacted()!r}")
        if self.protocol != "v2-grpc" and endpoint.grpc:
            raise ValueError(f"a {endpoint.scheme}:// url needs protocol v2-grpc, not {self.protocol}")
        if self.protocol == "json":
            missing = [f for f in ("request_template", "response_path", "infer_path") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"protocol json needs {', '.join(missing)}")
        authorization = [source for source, given in (
            ("the URL's user:password (sent as Basic)", endpoint.has_credentials),
            ("bearer_token", self.bearer_token is not None),
            ("headers.Authorization", any(name.lower() == "authorization" for name in self.headers)),
        ) if given]
        if len(authorization) > 1:
            raise ValueError(f"{' and '.join(authorization)} both set the Authorization header; give one")
        return self


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
RESERVED_HEADERS = ("host", "content-length", "content-type", "transfer-encoding", "connection", "te")
"""Headers the clients set themselves (framing, the target's authority, the codec's content type)."""


def check_header(name: str, value: str | None) -> None:
    """ValueError when `name` is not an HTTP header name a profile may set, or `value` (when given) is not
    printable ASCII on one line; the message names the header, never the value."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name[:60]!r} is not a header name (letters, digits and !#$%&'*+.^_`|~- only)")
    if name.lower() in RESERVED_HEADERS or name.lower().startswith("grpc-"):
        raise ValueError(f"the header {name} is set by the profiler itself")
    if value is not None and not all(" " <= char <= "~" or char == "\t" for char in value):
        raise ValueError(f"the value of header {name} must be printable ASCII on one line")


def _holdout_location(value: Any) -> Any:
    """dataset.path: a URL (http(s)://, s3://, gs://) stays text, checked here; anything else is a local path."""
    if isinstance(value, str) and "://" in value:
        if not is_url(value):
            scheme = value.split("://", 1)[0][:20]
            raise ValueError(f"{scheme!r} is not a scheme the hold-out set can be read from "
                             f"(give a local path, or one of {', '.join(s + '://' for s in URL_SCHEMES)})")
        parts = urlsplit(value)
        if not (parts.netloc and parts.path.strip("/")):
            raise ValueError(f"{redact_url(value)} names no object (expected e.g. s3://bucket/holdout.parquet)")
        return value
    return _usable_path(Path(value)) if isinstance(value, str) else value


TextMatch = Literal["exact", "normalised", "regex", "contains"]
"""How generated text is scored against its label (measure.text)."""


class DatasetConfig(_Strict):
    """The hold-out file (a local path or a URL) and which of its fields hold the inputs, the label and the id.

    Generative protocols read a `prompt` field (openai-completions, or one user message for openai-chat) or a
    `messages` field (a list of {role, content}, openai-chat) instead of `inputs`, and score the generated
    text against the label by `match` (with `pattern`, a regular expression, for regex extraction).
    """

    path: Annotated[Path | str, BeforeValidator(_holdout_location)]
    format: Literal["jsonl", "csv", "parquet"] | None = None
    inputs: str | list[str] = "inputs"
    label: str = "label"
    id: str | None = None
    cache_dir: FilePath | None = None
    """Where a hold-out set read from a URL is cached (default: PROFILER_CACHE_DIR, else ~/.cache/profiler)."""
    tls_ca_file: FilePath | None = None
    """A PEM file of CAs an https:// hold-out server may be signed by, beside the system's (S3: AWS_CA_BUNDLE)."""
    prompt: str | None = None
    messages: str | None = None
    match: TextMatch = "exact"
    pattern: str | None = None
    """match regex: the answer is the pattern's first group (or its whole match) in the generated text."""

    @model_validator(mode="after")
    def _text_fields(self) -> DatasetConfig:
        if self.prompt is not None and self.messages is not None:
            raise ValueError("give 'prompt' or 'messages', not both")
        if (self.match == "regex") != (self.pattern is not None):
            raise ValueError("match: regex needs 'pattern' (a regular expression), and 'pattern' needs match: regex")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self

    @property
    def text_field(self) -> str | None:
        """The field holding each sample's prompt or messages, None for tensor inputs."""
        return self.prompt if self.prompt is not None else self.messages

    @property
    def resolved_format(self) -> str:
        """The format given, or the one the file's (or URL's) extension implies."""
        if self.format:
            return self.format
        name = urlsplit(self.path).path if isinstance(self.path, str) else self.path.name
        suffix = PurePosixPath(name).suffix.lower()
        return {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "jsonl")


def parse_start_at(text: str) -> float:
    """A start instant as Unix seconds: from a number of seconds, or ISO-8601 with a zone ('2026-12-01T23:00:00Z');
    ValueError naming what was wrong."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is neither Unix seconds nor an ISO-8601 time") from None
    if when.tzinfo is None:
        raise ValueError(f"{text[:40]!r} has no time zone (add Z or +00:00): pods in other zones would disagree")
    return when.timestamp()


def _start_instant(value: Any) -> Any:
    """load.start_at as the profile gives it: text is parsed (parse_start_at), a number left to the field."""
    return parse_start_at(value) if isinstance(value, str) else value


class PartConfig(_Strict):
    """Part `index` (from 0) of `count` processes that split every stage's timetable between them."""

    index: Annotated[int, Field(ge=0)]
    count: Annotated[int, Field(ge=1, le=10_000)]

    @model_validator(mode="after")
    def _inside(self) -> PartConfig:
        if self.index >= self.count:
            raise ValueError(f"part {self.index} of {self.count}: parts are numbered 0 to {self.count - 1}")
        return self


class StageConfig(_Strict):
    """One step of the load: a rate held for a duration or for a number of requests."""

    rate_rps: Annotated[float, Field(gt=0, le=MAX_RATE_RPS)]
    duration_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    requests: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None

    @model_validator(mode="after")
    def _held(self) -> StageConfig:
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("a stage needs 'duration_s' or 'requests' (exactly one)")
        return self


class RampConfig(_Strict):
    """Rising stages: start, times `factor` or plus `step_rps`, up to `max_rps`, each held alike."""

    start_rps: Annotated[float, Field(gt=0, le=MAX_RATE_RPS)]
    max_rps: Annotated[float, Field(gt=0, le=MAX_RATE_RPS)]
    factor: Annotated[float, Field(gt=1, le=100)] | None = None
    step_rps: Annotated[float, Field(gt=0, le=MAX_RATE_RPS)] | None = None
    duration_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    requests: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None

    @model_validator(mode="after")
    def _valid(self) -> RampConfig:
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("a ramp needs 'duration_s' or 'requests' per stage (exactly one)")
        ramp_rates(self.start_rps, self.max_rps, self.factor, self.step_rps)
        return self


class SearchConfig(_Strict):
    """Capacity search: raise the rate until the objective breaks, then bisect to `precision`."""

    start_rps: Annotated[float, Field(gt=0, le=MAX_RATE_RPS)] = 10.0
    max_rps: Annotated[float, Field(gt=0, le=MAX_RATE_RPS)] = 100_000.0
    factor: Annotated[float, Field(gt=1, le=100)] = 2.0
    precision: Annotated[float, Field(gt=0, lt=1)] = 0.05
    window_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    windows: Annotated[int, Field(ge=3, le=100)] = 3
    max_windows: Annotated[int, Field(ge=3, le=1000)] = 8
    stability: Annotated[float, Field(gt=0, lt=1)] = 0.10
    max_stages: Annotated[int, Field(ge=2, le=1000)] = 30

    @model_validator(mode="after")
    def _valid(self) -> SearchConfig:
        if self.max_rps < self.start_rps:
            raise ValueError(f"max_rps {self.max_rps:g} is below start_rps {self.start_rps:g}")
        if self.max_windows < self.windows:
            raise ValueError(f"max_windows {self.max_windows} is below windows {self.windows}")
        return self


class ConcurrencyRampConfig(_Strict):
    """Rising concurrency levels: start, times `factor` or plus `step`, up to `max`."""

    start: Annotated[int, Field(ge=1, le=100_000)] = 1
    max: Annotated[int, Field(ge=1, le=100_000)]
    factor: Annotated[float, Field(gt=1, le=100)] | None = None
    step: Annotated[int, Field(ge=1, le=100_000)] | None = None

    @model_validator(mode="after")
    def _valid(self) -> ConcurrencyRampConfig:
        concurrency_levels(self.start, self.max, self.factor, self.step)
        return self


class LoadConfig(_Strict):
    """The schedule: open-loop rates (`stages`, a `ramp`, or a capacity `search`), or closed-loop
    `concurrency` levels (a list, or a ramp), each held for `duration_s`."""

    stages: Annotated[list[StageConfig], Field(min_length=1)] | None = None
    ramp: RampConfig | None = None
    search: SearchConfig | None = None
    concurrency: Annotated[list[Annotated[int, Field(ge=1, le=100_000)]], Field(min_length=1, max_length=1000)] | \
        ConcurrencyRampConfig | None = None
    """Closed loop: keep N requests in flight for `duration_s` per level (vLLM's --max-concurrency,
    perf_analyzer's --concurrency-range)."""
    duration_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    """How long each concurrency level is held (closed loop only)."""
    arrival: Literal["constant", "poisson"] = "constant"
    seed: int = 0
    warmup_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    max_in_flight: Annotated[int, Field(ge=1, le=100_000)] = 512
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 1
    accuracy_pass: bool = True
    """Send every hold-out sample once (closed loop) before the load, so accuracy covers the whole set."""
    on_error: Literal["continue", "stop"] = "continue"
    """After a stage whose error rate broke the objective's budget: go on with the next stage, or stop."""
    workers: Annotated[int, Field(ge=1)] | None = None
    """Generator processes; None picks from the cores and the highest rate (1 = in the sidecar's own loop)."""
    client: Literal["lean", "library"] = "lean"
    """lean: the project's own clients (HTTP/1.1 for http://, HTTP/2 gRPC for grpc://); library: aiohttp and
    grpc.aio. TLS targets always use the library clients."""
    lag_budget_ms: Annotated[float, Field(ge=0, le=100)] = 1.25
    """How late a send may be made so that it shares a wake with others (0: every request its own wake)."""
    start_at: Annotated[float, BeforeValidator(_start_instant),
                        Field(gt=0, allow_inf_nan=False)] | None = None
    """The wall-clock instant the first stage starts at (Unix seconds, or ISO-8601 with a zone): pods that split
    the load (`--part K/N`) agree on it without talking; PROFILER_START_AT overrides it."""
    part: PartConfig | None = None
    """This process's share of every stage's timetable; set by `profiler run --part K/N` (or JOB_COMPLETION_INDEX)."""

    @model_validator(mode="after")
    def _one_schedule(self) -> LoadConfig:
        given = [name for name in ("stages", "ramp", "search", "concurrency") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'stages', 'ramp', 'search' or 'concurrency'"
                             + (f" (got {' and '.join(given)})" if given else ""))
        if self.part is not None and self.part.count > 1 and self.search is not None:
            raise ValueError("a capacity search picks each next rate from what it measured, so it cannot be split "
                             "into parts: give 'stages' or a 'ramp'")
        if self.part is not None and self.part.count > 1 and self.concurrency is not None:
            raise ValueError("a closed-loop sweep holds a number of requests in flight, which parts cannot share: "
                             "give 'stages' or a 'ramp'")
        if (self.concurrency is None) != (self.duration_s is None):
            raise ValueError("'concurrency' needs 'duration_s' (how long each level is held), and 'duration_s' "
                             "belongs to 'concurrency' only")
        return self

    def levels(self) -> list[int]:
        """The closed-loop concurrency levels ([] for an open-loop schedule)."""
        levels = self.concurrency
        if levels is None:
            return []
        if isinstance(levels, list):
            return list(levels)
        return concurrency_levels(levels.start, levels.max, levels.factor, levels.step)

    def planned_stages(self) -> list[Stage]:
        """The schedule.Stage list for `stages` or `ramp` (a search plans its stages as it goes)."""
        if self.concurrency is not None:
            assert self.duration_s is not None
            return plan_closed(self.levels(), self.duration_s, self.warmup_s)
        if self.stages is not None:
            return plan([(s.rate_rps, s.duration_s, s.requests) for s in self.stages], self.warmup_s)
        if self.ramp is not None:
            r = self.ramp
            rates = ramp_rates(r.start_rps, r.max_rps, r.factor, r.step_rps)
            return plan([(rate, r.duration_s, r.requests) for rate in rates], self.warmup_s)
        return []

    def highest_rate_rps(self) -> float:
        """The highest rate the schedule can offer."""
        if self.search is not None:
            return self.search.max_rps
        if self.concurrency is not None:
            return 1.0  # a closed loop runs in one process (workers are for open-loop rates beyond a core)
        return max(float(s.rate_rps) for s in self.planned_stages())


class ObjectiveConfig(_Strict):
    """The latency objective a stage must meet to count as sustained, and a generative model's per-request SLOs.

    `ttft_ms`, `tpot_ms` and `e2e_ms` are goodput's SLOs (vLLM's `--goodput ttft: tpot: e2el:`): a request is
    good when it met every one given; a stage's goodput_rps counts good requests per second. Each given also
    bounds the stage's value at `percentile` for the stage to count as sustained.
    """

    percentile: Annotated[float, Field(gt=0, lt=100)] = 99.0
    latency_ms: Annotated[float, Field(gt=0)] = 200.0
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    ttft_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    tpot_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    e2e_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


Bound = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A gate's number: an int or a float, never a string, a bool, NaN or infinity."""


class ChangeConfig(_Strict):
    """A bound on the change against the predecessor run, in the direction that counts as better."""

    max_worse: Annotated[Bound, Field(ge=0)] | None = None
    min_better: Annotated[Bound, Field(ge=0)] | None = None
    relative: bool = False
    significant: bool = False
    alpha: Annotated[Bound, Field(gt=0, lt=0.5)] = 0.05

    @model_validator(mode="after")
    def _one_bound(self) -> ChangeConfig:
        if (self.max_worse is None) == (self.min_better is None):
            raise ValueError("a change bound needs exactly one of 'max_worse' (a tolerated regression) or "
                             "'min_better' (a required improvement)")
        return self


class GateConfig(_Strict):
    """A bound on one metric of the report; see profiler.judge.verdict for the metric names."""

    metric: str
    min: Bound | None = None
    max: Bound | None = None
    change: ChangeConfig | None = None
    greater_is_better: bool | None = None
    required: bool = True

    @model_validator(mode="after")
    def _has_bound(self) -> GateConfig:
        if self.min is None and self.max is None and self.change is None:
            raise ValueError("a gate needs 'min', 'max' or 'change'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' {self.min:g} is above 'max' {self.max:g}")
        if self.change is not None and self.change.significant and not has_test(self.metric):
            raise ValueError(f"change.significant: no significance test exists for {self.metric!r} (tests "
                             "exist for accuracy, precision/recall/F1 and latency percentiles)")
        return self

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return normalise_metric(value)

    def to_gate(self) -> Gate:
        """The pure profiler.judge.verdict.Gate for this entry."""
        change = None
        if self.change is not None:
            change = ChangeBound(self.change.max_worse, self.change.min_better, self.change.relative,
                                 self.change.significant, self.change.alpha)
        return Gate(self.metric, self.min, self.max, self.required, change, self.greater_is_better)


class RequirementsConfig(_Strict):
    """The demand the model must serve: requests a day (or a peak rate), each within a latency."""

    requests_per_day: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    peak_rps: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    peak_factor: Annotated[float, Field(ge=1, le=1000)] = 1.0
    latency_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    percentile: Annotated[float, Field(gt=0, lt=100)] | None = None
    utilisation: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_replicas: Annotated[int, Field(ge=1, le=100_000)] = 1
    replica_memory_bytes: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _has_demand(self) -> RequirementsConfig:
        if self.requests_per_day is None and self.peak_rps is None:
            raise ValueError("requirements need 'requests_per_day' or 'peak_rps'")
        return self

    @field_validator("replica_memory_bytes", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        return parse_bytes(value)


class NodeConfig(_Strict):
    """One node of the cluster the model runs on: what a pod may use, and what it costs."""

    allocatable_memory_bytes: Annotated[int, Field(gt=0)] | None = None
    """Default: resources.node_memory_bytes."""
    allocatable_cpu_cores: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    price_per_hour: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    currency: str = "USD"
    allocatable_storage_bytes: Annotated[int, Field(gt=0)] | None = None
    """Disk a node offers its pods (ephemeral storage); each replica takes its artifact plus
    resources.replica_storage_bytes. Default: resources.node_storage_bytes."""
    gpus: Annotated[int, Field(ge=0, le=1024)] | None = None
    """GPUs on a node. Default: resources.gpu.node_gpus, else the GPUs the GPU source reported."""
    gpu_memory_bytes: Annotated[int, Field(gt=0)] | None = None
    """Memory of one GPU. Default: the device's total memory as the GPU source reported it."""

    @field_validator("allocatable_memory_bytes", "allocatable_storage_bytes", "gpu_memory_bytes", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        return parse_bytes(value)


class HistoryConfig(_Strict):
    """The SQLite run history (default: profiler-history.sqlite next to the report)."""

    enabled: bool = True
    path: FilePath | None = None
    lock_timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    """How long saving a run waits for another writer before it gives up (the report says so)."""


class BaselineConfig(_Strict):
    """Which run change gates compare with: a named run, or the last passing run of this model and hold-out."""

    run: str | None = None
    required: bool = False
    """When true, the absence of any predecessor makes change checks block the verdict (inconclusive)."""


class TrackingConfig(_Strict):
    """Log each run's parameters, metrics and report to MLflow (needs the 'mlflow' extra)."""

    mlflow_uri: str
    experiment: str = "profiler"
    history: bool = True
    """Read runs back from MLflow too: the predecessor, `profiler history` and `profiler compare` use the
    experiment (the SQLite file is still written, a local copy). False: MLflow is written only."""


def parse_bytes(value: Any) -> Any:
    """'512Mi', '16Gi', '8G', '1.5GiB' or a plain number of bytes, as an int of bytes."""
    if not isinstance(value, str):
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(i?)B?\s*", value, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"must be a size like 512Mi, 16Gi or a number of bytes, got {value!r}")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    multiplier = base ** ("KMGTP".index(unit.upper()) + 1) if unit else 1
    size = float(number) * multiplier
    if not math.isfinite(size) or size >= 2**63:
        raise ValueError(f"{value[:40]!r} is too large a size")
    return int(size)


Bytes = Annotated[int, BeforeValidator(parse_bytes), Field(gt=0)]


class GpuConfig(_Strict):
    """The model's GPU memory and utilisation: per process through NVML, or from a Prometheus endpoint
    (Triton's /metrics, a DCGM exporter). Triton's and DCGM's metric names work with no configuration."""

    nvml: bool = False
    """Read the watched process tree's GPU memory through NVML (needs the 'gpu' extra: nvidia-ml-py)."""
    metrics_url: str | None = None
    """A Prometheus endpoint with GPU metrics (a DCGM exporter, Triton's :8002/metrics). Default:
    resources.metrics_url."""
    memory_metric: str | None = None
    """The used-GPU-memory metric, when neither Triton's nor DCGM's names are exposed."""
    memory_unit_bytes: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    """Bytes per unit of memory_metric (1048576 for a metric in MiB)."""
    total_metric: str | None = None
    """One GPU's total memory, in memory_unit_bytes (optional)."""
    utilisation_metric: str | None = None
    """The GPU utilisation metric (optional)."""
    utilisation_unit_pct: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    """Percent per unit of utilisation_metric (100 for a ratio 0..1)."""
    labels: dict[str, str] = {}
    """Only series with these label values count (a GPU: {gpu: "0"}, a pod: {pod: my-model-0})."""
    node_gpus: Annotated[int, Field(ge=0, le=1024)] | None = None
    """GPUs on a node, for the fit. Default: the GPUs the source reported."""
    replica_gpu_memory_bytes: Bytes | None = None
    """A replica's GPU memory for the fit, instead of the steady state measured under load."""

    @model_validator(mode="after")
    def _url(self) -> GpuConfig:
        if self.metrics_url is not None and not self.metrics_url.startswith(("http://", "https://")):
            raise ValueError(f"metrics_url must be an http:// or https:// URL, got {redact_url(self.metrics_url)!r}")
        return self


class ResourcesConfig(_Strict):
    """Which processes are the model (pid, command-line pattern or the pod), how to read them, the footprint."""

    pid: Annotated[int, Field(gt=0)] | None = None
    cmdline: str | None = None
    pod: bool = False
    """Watch every process in the pod that is not the sidecar (needs shareProcessNamespace)."""
    cgroup_path: FilePath | None = None
    """The model container's cgroup directory (v2, or v1's memory controller)."""
    metrics_url: str | None = None
    """The target's Prometheus endpoint, used when no process or cgroup is visible."""
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    settle_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    series_points: Annotated[int, Field(ge=16, le=100_000)] = 512
    memory_limit_bytes: Bytes | None = None
    """The container's memory limit, when no cgroup says it (for the time-to-limit projection)."""
    artifact_path: FilePath | None = None
    """The model artifact on disk (a file or a directory), for the footprint."""
    node_memory_bytes: Bytes | None = None
    node_cpu_cores: Annotated[float, Field(gt=0, le=100_000)] | None = None
    node_storage_bytes: Bytes | None = None
    """A node's storage for its pods, for replicas per node (node.allocatable_storage_bytes wins)."""
    replica_storage_bytes: Bytes | None = None
    """Storage each replica takes beside its artifact (image layers, a cache), for replicas per node."""
    gpu: GpuConfig | None = None
    leak_warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    leak_min_bytes_per_request: Annotated[float, Field(gt=0)] = 256.0

    @model_validator(mode="after")
    def _one_selector(self) -> ResourcesConfig:
        if sum((self.pid is not None, self.cmdline is not None, self.pod)) > 1:
            raise ValueError("give at most one of pid, cmdline and pod")
        if self.cmdline is not None:
            try:
                re.compile(self.cmdline)
            except re.error as exc:
                raise ValueError(f"cmdline is not a valid regular expression: {exc}") from None
        if self.metrics_url is not None and not self.metrics_url.startswith(("http://", "https://")):
            raise ValueError(f"metrics_url must be an http:// or https:// URL, got {redact_url(self.metrics_url)!r}")
        if self.gpu is not None and self.gpu.nvml and self.pid is None and self.cmdline is None and not self.pod:
            raise ValueError("gpu.nvml reads the GPU memory of the model's processes: give pid, cmdline or pod")
        return self


class ServerStatsConfig(_Strict):
    """The model server's own figures, read before and after each stage and shown beside the profiler's
    (measure/server_stats.py says what each kind reads)."""

    kind: Literal["triton", "triton-metrics", "kserve", "mlserver", "bentoml"]
    url: str
    """triton: the server's HTTP address (its statistics extension, /v2/models/{model}/stats);
    the others: the server's Prometheus /metrics URL."""
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    """How long one reading may take; a reading that fails is noted in the stage's view, never a failed run."""

    @model_validator(mode="after")
    def _http_url(self) -> ServerStatsConfig:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http:// or https:// URL, got {redact_url(self.url)!r}")
        return self


class ReportConfig(_Strict):
    """Where the JSON report goes, and its HTML page."""

    path: FilePath = Path("report.json")
    html: FilePath | None = None
    """The self-contained HTML page of the report (charts, no network). Unset: beside the JSON report, with
    its name and the suffix .html (report.json -> report.html); `html: null` writes none."""

    def html_file(self) -> Path | None:
        """Where the HTML page goes: `html` when the profile sets it (None: no page), else beside `path`."""
        if "html" in self.model_fields_set:
            return self.html
        return self.path.with_suffix(".html")


class ServerConfig(_Strict):
    """The sidecar's own HTTP server (serve mode)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9090
    start: Literal["on-start", "on-trigger"] = "on-start"
    """on-start: run the profile when the server starts; on-trigger: wait for POST /runs."""
    token_file: FilePath | None = None
    """File holding the bearer token that POST /runs must present (e.g. a mounted Kubernetes Secret)."""
    token_env: EnvName | None = None
    """Or: the name of the environment variable holding that token."""
    shutdown_grace_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    """On SIGTERM or SIGINT (`serve` and `run`), how long requests in flight may take before the aborted
    report is written; every other phase of the run ends at once."""

    @model_validator(mode="after")
    def _trigger_needs_token(self) -> ServerConfig:
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("give token_file or token_env, not both")
        if self.start == "on-trigger" and self.token_file is None and self.token_env is None:
            raise ValueError("start: on-trigger needs token_file or token_env (POST /runs is the trigger)")
        return self


class Config(_Strict):
    """A whole profile: target, hold-out set, load, objective, gates, resources, report."""

    target: TargetConfig
    dataset: DatasetConfig
    load: LoadConfig
    objective: ObjectiveConfig = ObjectiveConfig()
    gates: list[GateConfig] = []
    resources: ResourcesConfig = ResourcesConfig()
    server_stats: ServerStatsConfig | None = None
    report: ReportConfig = ReportConfig()
    server: ServerConfig = ServerConfig()
    requirements: RequirementsConfig | None = None
    node: NodeConfig | None = None
    history: HistoryConfig = HistoryConfig()
    baseline: BaselineConfig = BaselineConfig()
    tracking: TrackingConfig | None = None

    @model_validator(mode="after")
    def _text_dataset(self) -> Config:
        generative = self.target.protocol in GENERATIVE
        if generative and self.dataset.text_field is None:
            raise ValueError(f"dataset: protocol {self.target.protocol} needs 'prompt' (the field holding each "
                             "prompt) or 'messages' (the field holding each list of chat messages)")
        if not generative and self.dataset.text_field is not None:
            raise ValueError(f"dataset: 'prompt' and 'messages' are for the openai-chat and openai-completions "
                             f"protocols, not {self.target.protocol}")
        if self.dataset.messages is not None and self.target.protocol != "openai-chat":
            raise ValueError("dataset.messages needs protocol openai-chat (openai-completions takes a prompt)")
        if generative and self.load.batch_size != 1:
            raise ValueError("load.batch_size: a generative request carries one prompt (batch_size 1)")
        return self


MAX_CONFIG_BYTES = 1024 * 1024
"""A profile larger than this is refused before it is parsed (profiles are a few kilobytes)."""
MAX_CONFIG_NODES = 100_000
"""YAML values a profile may expand to, aliases counted at each use: refuses alias bombs."""
CONFIG_WAIT_S = 10.0
"""How long a profile that is a pipe or a FIFO may take to arrive (`-c <(envsubst < profile.yaml)`)."""


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = (),
                env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML profile; relative paths in it are taken from the file's folder.

    `${VAR}` and `${VAR:-default}` in the text take values from `env` (default: the process environment);
    `overrides` are `--set key.path=value` items applied to the parsed profile before it is validated.
    """
    file = Path(path)
    return parse_config(read_profile(file), file, overrides, env)


def read_profile(file: Path) -> str:
    """The profile's text: at most MAX_CONFIG_BYTES of UTF-8; a pipe or FIFO is waited for CONFIG_WAIT_S at
    most, never forever. ConfigError names the file (and the line of a byte that is not UTF-8)."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: cannot read config: {_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{file}: cannot read config: it is a directory")
        data = _read_regular(fd) if stat.S_ISREG(mode) else _read_stream(fd, file)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config: {_reason(exc)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{file}: the config is larger than {MAX_CONFIG_BYTES // 1024} KiB; is this the profile?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{file}:{line}: the config is not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def _reason(exc: OSError | ValueError) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _read_regular(fd: int) -> bytes:
    os.set_blocking(fd, True)
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_CONFIG_BYTES:
        chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_stream(fd: int, file: Path) -> bytes:
    """A pipe, FIFO or device: read until its end, waiting CONFIG_WAIT_S in all for its data."""
    deadline = time.monotonic() + CONFIG_WAIT_S
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_CONFIG_BYTES:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise ConfigError(f"{file}: cannot read config: nothing arrived within {CONFIG_WAIT_S:g} s "
                              "(a FIFO with no writer?)")
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def parse_config(text: str, file: Path, overrides: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> Config:
    """Validate YAML text; `file` names the source in errors and anchors relative paths. `env` and
    `overrides` as for load_config (variables are substituted only when the text has any)."""
    if "${" in text:
        text = substitute_env(text, file, os.environ if env is None else env)
    node, data = _parse_yaml(text, file)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the config must be a YAML mapping of sections (target, dataset, load, ...)")
    applied = [apply_override(data, item) for item in overrides]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _override_error(exc, applied) or _config_error(exc, node, file) from None
    except RecursionError:
        raise ConfigError(f"{file}: the config refers to itself (a YAML alias inside its own anchor)") from None
    return _anchor_paths(config, file.parent)


_VARIABLE = re.compile(r"\$(\$?)\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute_env(text: str, file: Path, env: Mapping[str, str]) -> str:
    """`${VAR}` and `${VAR:-default}` replaced by the variable's value (the default when it is unset or
    empty, as the shell does); `$${...}` is a literal `${...}`. Comment lines are left alone. ConfigError
    naming file:line for an unset variable without a default, or a malformed reference."""
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if "${" not in line or line.lstrip().startswith("#"):
            continue

        def value(match: re.Match[str], number: int = number) -> str:
            if match.group(1):  # $${...}: escaped
                return "${" + match.group(2) + "}"
            name, has_default, default = match.group(2).partition(":-")
            if not _VARIABLE_NAME.fullmatch(name):
                raise ConfigError(f"{file}:{number}: ${{{match.group(2)[:40]}}} is not a variable reference "
                                  "(write ${NAME} or ${NAME:-default}; $${...} for a literal)")
            found = env.get(name)
            if found:
                return found
            if has_default:
                return default
            raise ConfigError(f"{file}:{number}: ${{{name}}} is not set and has no default "
                              f"(set it, or write ${{{name}:-value}})")

        lines[number - 1] = _VARIABLE.sub(value, line)
    return "\n".join(lines)


def apply_override(data: dict[str, Any], item: str) -> tuple[tuple[str | int, ...], str]:
    """Apply one `--set key.path=value` to the parsed profile (the value read as YAML: 200, true, [1, 2],
    '{rate_rps: 5}'); list items by index. Returns the path and the item, to name it in validation errors.
    ConfigError naming the item when it is malformed or its path cannot be followed."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item[:80]!r}: expected KEY=VALUE, e.g. load.stages.0.rate_rps=200")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"--set {key}: the value is not valid YAML: {' '.join(str(problem).split())}") from None
    parts = key.strip().split(".")
    path: list[str | int] = []
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "the profile"
        if isinstance(node, list):
            if not (part.isdigit() and int(part) < len(node)):
                raise ConfigError(f"--set {key}: {where} has {len(node)} item(s); {part!r} is not an index of one")
            index: str | int = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and node.get(part) is None:
                node[part] = {}  # a section the file leaves out: --set makes it
        else:
            raise ConfigError(f"--set {key}: {where} is a value, not a section or a list")
        path.append(index)
        if last:
            node[index] = value
        else:
            node = node[index]
    return tuple(path), item


def _override_error(exc: ValidationError, applied: Sequence[tuple[tuple[str | int, ...], str]]) -> ConfigError | None:
    """The validation error as '--set KEY=VALUE: field: message' when it is about a --set item's value."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    for path, item in reversed(applied):
        if loc and (loc[:len(path)] == path or path[:len(loc)] == loc):
            field = ".".join(_field_part(part) for part in loc) or "(top)"
            message = " ".join(error["msg"].removeprefix("Value error, ").split())
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            # The key, not the value: a --set may carry a token, and pydantic's message never repeats it.
            key = item.partition("=")[0].strip()
            return ConfigError(f"--set {key[:120]}: {field}: {redact_text(message)}")
    return None


def _parse_yaml(text: str, file: Path) -> tuple[yaml.Node | None, Any]:
    """The composed node tree (for line numbers) and the loaded data; ConfigError for YAML that is malformed,
    nested too deeply, or expands (through aliases) beyond MAX_CONFIG_NODES values."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_expansion(node, file)
        data = yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a control character, U+FFFE)
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{file}:{line}: invalid YAML: the character #x{exc.character:04x} is not allowed "
                          "in YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {' '.join(str(problem).split())}") from None
    except RecursionError:
        raise ConfigError(f"{file}: invalid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # a value PyYAML cannot construct, e.g. a timestamp out of range
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None
    return node, data


def _check_expansion(root: yaml.Node | None, file: Path) -> None:
    """Count the values the document expands to, each alias at every use, and stop past MAX_CONFIG_NODES."""
    stack = [root] if root is not None else []
    count = 0
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ConfigError(f"{file}: the config expands to more than {MAX_CONFIG_NODES} values "
                              "(YAML aliases used over and over?)")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            _check_unique_keys(node, file)
            for key, value in node.value:
                stack.extend((key, value))


def _check_unique_keys(node: yaml.MappingNode, file: Path) -> None:
    """YAML loaders keep the last of two equal keys without a word: two `gates:` would drop the first."""
    seen: set[str] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode):
            if key.value in seen:
                raise ConfigError(f"{file}:{key.start_mark.line + 1}: the key {key.value[:60]!r} appears twice "
                                  "in the same mapping")
            seen.add(key.value)


def _config_error(exc: ValidationError, node: yaml.Node | None, file: Path) -> ConfigError:
    """The first validation error as one line: file:line: field: message (and how many more)."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    field = ".".join(_field_part(part) for part in loc) or "(top)"
    line = _line_of(node, loc)
    where = f"{file}:{line}" if line else str(file)
    message = redact_text(" ".join(error["msg"].removeprefix("Value error, ").split()))
    if error["type"] == "missing":
        message = "required field is missing"
    elif error["type"] == "extra_forbidden":
        message = "unknown field"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(f"{where}: {field}: {message}{more}")


def _field_part(part: Any) -> str:
    """One step of a field's location as the error names it: a key of odd characters (a user's own) quoted."""
    text = str(part)
    plain = text.isprintable() and " " not in text and 0 < len(text) <= 60
    return text if plain else repr(text[:60])


def _anchor_paths(config: Config, base: Path) -> Config:
    def anchor(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    dataset_path = config.dataset.path
    update_dataset: dict[str, Any] = {"path": anchor(dataset_path) if isinstance(dataset_path, Path) else dataset_path}
    for name in ("cache_dir", "tls_ca_file"):
        if getattr(config.dataset, name) is not None:
            update_dataset[name] = anchor(getattr(config.dataset, name))
    dataset = config.dataset.model_copy(update=update_dataset)
    report_update: dict[str, Any] = {"path": anchor(config.report.path)}
    if config.report.html is not None:
        report_update["html"] = anchor(config.report.html)
    report = config.report.model_copy(update=report_update)
    history_path = anchor(config.history.path) if config.history.path else report.path.parent / HISTORY_FILE
    update: dict[str, Any] = {"dataset": dataset, "report": report, "target": _anchor_target(config.target, anchor),
                              "history": config.history.model_copy(update={"path": history_path})}
    if config.resources.artifact_path is not None:
        update["resources"] = config.resources.model_copy(
            update={"artifact_path": anchor(config.resources.artifact_path)})
    if config.server.token_file is not None:
        update["server"] = config.server.model_copy(update={"token_file": anchor(config.server.token_file)})
    return config.model_copy(update=update)


def _anchor_target(target: TargetConfig, anchor: Any) -> TargetConfig:
    """Secret files and the CA file are relative to the config file, like the hold-out file."""
    update: dict[str, Any] = {}
    if target.tls_ca_file is not None:
        update["tls_ca_file"] = anchor(target.tls_ca_file)
    if target.bearer_token is not None and target.bearer_token.file is not None:
        update["bearer_token"] = SecretSource(file=anchor(target.bearer_token.file))
    headers = {k: SecretSource(file=anchor(v.file)) if isinstance(v, SecretSource) and v.file else v
               for k, v in target.headers.items()}
    if headers != target.headers:
        update["headers"] = headers
    return target.model_copy(update=update) if update else target


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node along `loc` that exists."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        node = child
    if node is not None:
        line = node.start_mark.line + 1
    return line
