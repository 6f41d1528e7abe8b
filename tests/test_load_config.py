"""The load: section of the config: stages, ramp, search, and clear errors naming the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profiler.config import parse_config
from profiler.core.errors import ConfigError

HEAD = """\
target: {url: "http://127.0.0.1:1", model: m}
dataset: {path: data.jsonl}
load:
"""


def load(section: str):
    return parse_config(HEAD + section, Path("p.yaml"))


@pytest.mark.parametrize(
    ("section", "rates", "counts"),
    [
        ("  stages: [{rate_rps: 10, duration_s: 1}, {rate_rps: 20, duration_s: 2}]\n", [10, 20], [10, 40]),
        ("  stages: [{rate_rps: 10, requests: 7}]\n", [10], [7]),
        ("  ramp: {start_rps: 10, max_rps: 40, factor: 2, duration_s: 1}\n", [10, 20, 40], [10, 20, 40]),
        ("  ramp: {start_rps: 10, max_rps: 30, step_rps: 10, requests: 5}\n", [10, 20, 30], [5, 5, 5]),
        ("  search: {start_rps: 10, max_rps: 1000}\n", [], []),
    ],
)
def test_schedules(section, rates, counts):
    stages = load(section).load.planned_stages()
    assert [s.rate_rps for s in stages] == rates
    assert [s.expected_requests for s in stages] == counts


def test_warmup_goes_first():
    config = load("  warmup_s: 2\n  ramp: {start_rps: 5, max_rps: 10, factor: 2, duration_s: 1}\n")
    stages = config.load.planned_stages()
    assert [(s.name, s.rate_rps) for s in stages] == [("warmup", 5), ("stage-1", 5), ("stage-2", 10)]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("  stages: []\n", "p.yaml:4: load.stages: List should have at least 1 item"),
        ("  stages: [{rate_rps: 0, duration_s: 1}]\n", "load.stages.0.rate_rps: Input should be greater than 0"),
        ("  stages: [{rate_rps: -3, duration_s: 1}]\n", "load.stages.0.rate_rps"),
        ("  stages: [{rate_rps: 1e9, duration_s: 1}]\n", "less than or equal to 1000000"),
        ("  stages: [{rate_rps: 10, duration_s: 0}]\n", "load.stages.0.duration_s: Input should be greater than 0"),
        ("  stages: [{rate_rps: 10}]\n", "load.stages.0: a stage needs 'duration_s' or 'requests'"),
        ("  stages: [{rate_rps: 10, duration_s: 1, requests: 3}]\n", "exactly one"),
        ("  arrival: constant\n", "load: give exactly one of 'stages', 'ramp', 'search' or 'concurrency'"),
        ("  stages: [{rate_rps: 10, duration_s: 1}]\n  ramp: {start_rps: 1, max_rps: 2, factor: 2, duration_s: 1}\n",
         "(got stages and ramp)"),
        ("  ramp: {start_rps: 10, max_rps: 5, factor: 2, duration_s: 1}\n", "load.ramp: a ramp's max (5 rps) is below"),
        ("  ramp: {start_rps: 10, max_rps: 50, duration_s: 1}\n", "by a factor or by a step"),
        ("  ramp: {start_rps: 10, max_rps: 50, factor: 1, duration_s: 1}\n", "load.ramp.factor"),
        ("  ramp: {start_rps: 10, max_rps: 50, factor: 2}\n", "'duration_s' or 'requests' per stage"),
        ("  search: {start_rps: 100, max_rps: 10}\n", "max_rps 10 is below start_rps 100"),
        ("  search: {windows: 2}\n", "load.search.windows"),
        ("  stages: [{rate_rps: 10, duration_s: 1}]\n  on_error: explode\n", "load.on_error"),
        ("  stages: [{rate_rps: 10, duration_s: 1}]\n  workers: 0\n", "load.workers"),
        ("  stages: [{rate_rps: 10, duration_s: 1}]\n  client: fast\n", "load.client: Input should be 'lean'"),
    ],
)
def test_bad_load_sections_name_the_field(section, message):
    with pytest.raises(ConfigError) as info:
        load(section)
    assert message in str(info.value)
    assert str(info.value).startswith("p.yaml:")


@pytest.mark.parametrize(
    ("url", "protocol", "client", "expected"),
    [
        ("http://127.0.0.1:1", "v2-rest", "lean", "Http1Transport"),
        ("http://127.0.0.1:1", "v2-rest", "library", "HttpTransport"),
        ("https://127.0.0.1:1", "v2-rest", "lean", "HttpTransport"),  # TLS: the library client
        ("grpc://127.0.0.1:1", "v2-grpc", "lean", "H2GrpcTransport"),
        ("grpc://127.0.0.1:1", "v2-grpc", "library", "GrpcTransport"),
        ("grpcs://127.0.0.1:1", "v2-grpc", "lean", "GrpcTransport"),
    ],
)
def test_load_client_picks_the_transport(url, protocol, client, expected):
    from profiler.codecs.factory import make_codec
    from profiler.transports.factory import make_transport

    config = parse_config(f"""
target: {{url: "{url}", protocol: {protocol}, model: digits}}
dataset: {{path: d.jsonl, inputs: x, label: y}}
load: {{stages: [{{rate_rps: 1, duration_s: 1}}], client: {client}}}
""", Path("p.yaml"))
    assert type(make_transport(config, make_codec(protocol, model="digits"))).__name__ == expected


def test_lag_budget_is_bounded():
    stages = "  stages: [{rate_rps: 1, duration_s: 1}]\n"
    assert load(stages + "  lag_budget_ms: 0\n").load.lag_budget_ms == 0
    with pytest.raises(ConfigError, match="lag_budget_ms"):
        load(stages + "  lag_budget_ms: -1\n")


@pytest.mark.parametrize(("url", "problem"), [
    ("grpc://127.0.0.1", "has no port; a grpc:// target needs one"),
    ("grpc://model:port", "has a port that is not a number"),
    ("grpcs://[::1]:8001/v2", "has a path; a gRPC target is grpcs://host:8001, nothing after the port"),
    ("grpc://:8001", "has no host"),
    ("grpc://h:1?key=k", "has a query string; a gRPC target is grpc://host:8001"),
])
def test_a_grpc_url_needs_host_and_port(url, problem):
    with pytest.raises(ConfigError, match=rf"p.yaml:1: target.url: the URL {problem}"):
        parse_config(f'target: {{url: "{url}", protocol: v2-grpc, model: m}}\ndataset: {{path: d.jsonl}}\n'
                     "load: {stages: [{rate_rps: 1, duration_s: 1}]}\n", Path("p.yaml"))


def test_a_profile_means_the_same_on_any_machine():
    """More workers than this machine has cores is a plan for another machine, not a mistake in the file."""
    workers = (os.cpu_count() or 1) + 7
    assert load(f"  stages: [{{rate_rps: 10, duration_s: 1}}]\n  workers: {workers}\n").load.workers == workers
