"""Generative models: the OpenAI codecs, server-sent events, text accuracy, token figures, closed-loop stages.

The pure parts on made-up answers; the rest against the bundled example model's OpenAI face (a real
subprocess, the session's example server) through the real run, and a concurrency sweep over v2-rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from profiler.app.run import execute
from profiler.codecs.openai import OpenAICodec, sse_events
from profiler.config import LoadConfig, parse_config
from profiler.core.errors import ConfigError, DecodeError
from profiler.core.results import OK, Result, TokenTimes
from profiler.dataset import Sample
from profiler.examples.holdout import write_holdout, write_text_holdout
from profiler.judge.capacity import capacity_summary
from profiler.measure.accuracy import text_metrics
from profiler.measure.latency import StageRecorder, TokenSlo
from profiler.measure.text import TextRule, normalise
from profiler.record.context import plan_text
from profiler.record.exporter import RunCollector
from profiler.record.report import report_schema
from profiler.schedule import Stage, concurrency_levels, plan_closed
from profiler.state import RunState, new_state
from profiler.transports.http1 import _unframe_marks
from tests.test_prometheus import dashboard_queries

MS = 1_000_000


def chat_event(content: str) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}) + b"\r\n\r\n"


def test_sse_events_split_on_blank_lines_with_lf_or_crlf_and_join_data_lines() -> None:
    body = b"data: a\r\n\r\n: a comment\n\nevent: x\ndata: b\ndata: c\n\ndata:[DONE]\n\n"
    events = list(sse_events(body))
    assert [data for _, data in events] == [b"a", b"b\nc", b"[DONE]"]
    ends = [end for end, _ in events]
    assert ends == sorted(ends) and ends[0] == len(b"data: a\r\n")


def test_a_stream_is_timed_by_the_read_that_brought_each_event() -> None:
    codec = OpenAICodec("m")
    role = b"data: " + orjson.dumps({"choices": [{"delta": {"role": "assistant"}}]}) + b"\n\n"
    parts = [role + chat_event("The"), chat_event(" answer") + chat_event(" is"), chat_event(" 4"),
             b"data: " + orjson.dumps({"choices": [], "usage": {"completion_tokens": 4, "prompt_tokens": 9}})
             + b"\n\ndata: [DONE]\n\n"]
    body = b"".join(parts)
    marks, offset = [], 0
    for i, part in enumerate(parts):
        offset += len(part)
        marks.append((offset, (100 + 10 * i) * MS))
    text, tokens = codec.read(body, marks)
    assert text == "The answer is 4"
    assert tokens.first_ns == 100 * MS
    assert tokens.gaps_ns == [10 * MS, 0, 10 * MS]  # two events in one read share its time
    assert (tokens.output_tokens, tokens.prompt_tokens, tokens.counted) == (4, 9, False)


def test_without_usage_the_content_events_are_counted() -> None:
    codec = OpenAICodec("m", chat=False)
    body = b"".join(b"data: " + orjson.dumps({"choices": [{"text": t}]}) + b"\n\n" for t in ("a", "", "b", "c"))
    text, tokens = codec.read(body + b"data: [DONE]\n\n", None)
    assert text == "abc"
    assert (tokens.output_tokens, tokens.prompt_tokens, tokens.counted, tokens.first_ns) == (3, -1, True, 0)


def test_whole_answers_and_broken_ones() -> None:
    chat, completions = OpenAICodec("m", stream=False), OpenAICodec("m", chat=False, stream=False)
    answer = {"choices": [{"message": {"role": "assistant", "content": "Hi"}}], "usage": {"completion_tokens": 1}}
    assert chat.read(orjson.dumps(answer), None)[0] == "Hi"
    assert completions.decode(orjson.dumps({"choices": [{"text": "x"}]}), 1) == ["x"]
    for bad in (b"nope", b'{"choices": []}', b'{"error": {"message": "overloaded"}}',
                b'data: {"error": "boom"}\n\n', b"data: {oops\n\n"):
        with pytest.raises(DecodeError):
            chat.read(bad, None)


def test_requests_carry_the_profile_fields_and_the_prompt_or_messages() -> None:
    codec = OpenAICodec("m", max_tokens=7, temperature=0.0, stop=["\n"], extra_body={"seed": 1})
    body = orjson.loads(codec.encode([Sample("a", ["hello"], "x")]))
    assert body == {"model": "m", "max_tokens": 7, "temperature": 0.0, "stop": ["\n"], "stream": True,
                    "stream_options": {"include_usage": True}, "seed": 1,
                    "messages": [{"role": "user", "content": "hello"}]}
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert orjson.loads(codec.encode([Sample("b", [messages], "x")]))["messages"] == messages
    plain = orjson.loads(OpenAICodec("m", chat=False, stream=False).encode([Sample("c", ["p"], "x")]))
    assert plain["prompt"] == "p" and "stream" not in plain


@pytest.mark.parametrize(("mode", "pattern", "text", "label", "right"), [
    ("exact", None, "Paris", "Paris", True),
    ("exact", None, " Paris", "Paris", False),
    ("normalised", None, "  PARIS!\n", "paris", True),
    ("normalised", None, "Paris, France", "paris", False),
    ("contains", None, "It is Paris, of course.", "PARIS", True),
    ("contains", None, "It is Lyon.", "Paris", False),
    ("regex", r"answer is \(?([A-D])", "The answer is (B).", "b", True),
    ("regex", r"answer is \(?([A-D])", "No idea.", "B", False),
    ("regex", r"-?\d+", "about 42 apples", "42", True),
])
def test_text_rules(mode: str, pattern: str | None, text: str, label: str, right: bool) -> None:
    rule = TextRule(mode, pattern)
    assert rule.matches(rule.answer(text), label) is right


def test_text_metrics_score_answered_samples_under_the_rule() -> None:
    rule = TextRule("normalised")
    answers = [rule.answer(t) for t in ("Yes.", "no", "MAYBE")] + [None]
    metrics = text_metrics(["yes", "yes", "maybe", "no"], answers, rule)
    assert (metrics["scored"], metrics["matched"], metrics["coverage"]) == (3, 2, 0.75)
    assert metrics["accuracy"] == metrics["normalised_match"] == pytest.approx(2 / 3)
    assert normalise("  Hello,   World! ") == "hello world"


def test_chunked_framing_is_taken_out_of_the_marks() -> None:
    # Body "abc" + "defg" framed as chunks: 3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n
    spans = [(3, 3), (11, 4)]
    marks = [(6, 1), (8, 2), (13, 3), (22, 4)]
    _unframe_marks(marks, spans)
    assert marks == [(3, 1), (3, 2), (5, 3), (7, 4)]


def result(intended_ms: float, first_ms: float, done_ms: float, tokens: int, gaps_ms: list[float]) -> Result:
    timeline = TokenTimes(int(first_ms * MS), [int(g * MS) for g in gaps_ms], tokens, 5)
    return Result(1, 0, 1, int(intended_ms * MS), int(intended_ms * MS), int(done_ms * MS), OK, ["x"],
                  tokens=timeline)


def test_token_figures_follow_vllms_definitions_and_goodput_counts_requests_within_every_slo() -> None:
    stage = Stage(1, 0.0, 1.0, concurrency=2)
    recorder = StageRecorder(stage, slo=TokenSlo(ttft_ms=60, tpot_ms=12))
    recorder.started_ns, recorder.ended_ns = 0, 1000 * MS
    recorder.add(result(0, 50, 140, 10, [10] * 9))  # TTFT 50, TPOT (140-50)/9 = 10: good
    recorder.add(result(0, 80, 170, 10, [10] * 9))  # TTFT 80 > 60: not good
    recorder.add(result(0, 50, 240, 10, [10] * 8 + [110]))  # TPOT (240-50)/9 = 21.1 > 12: not good
    summary = recorder.summary()
    assert summary["mode"] == "closed-loop" and summary["concurrency"] == 2
    assert summary["ttft_ms"]["p50"] == pytest.approx(50, rel=0.01)
    assert summary["ttft_ms"]["max"] == pytest.approx(80, rel=0.01)
    assert summary["tpot_ms"]["max"] == pytest.approx(190 / 9, rel=0.01)
    assert summary["itl_ms"]["p50"] == pytest.approx(10, rel=0.01)
    assert summary["itl_ms"]["max"] == pytest.approx(110, rel=0.01)
    assert summary["output_tokens"] == 30 and summary["prompt_tokens"] == 15
    assert summary["good_requests"] == 1
    assert summary["goodput_rps"] == pytest.approx(1.0, rel=0.01)
    assert summary["output_tokens_per_s"] == pytest.approx(30, rel=0.01)
    assert summary["token_counts"] == "usage"
    assert set(summary["histograms"]) == {"latency", "service", "lag", "ttft", "itl", "tpot"}


def test_closed_loop_plans_and_capacity() -> None:
    assert concurrency_levels(1, 16, factor=2) == [1, 2, 4, 8, 16]
    assert concurrency_levels(2, 7, step=2) == [2, 4, 6]
    stages = plan_closed([1, 4], 2.0, warmup_s=1.0)
    assert [(s.warmup, s.concurrency, s.duration_s) for s in stages] == [(True, 1, 1.0), (False, 1, 2.0),
                                                                        (False, 4, 2.0)]
    levels = [{"warmup": False, "mode": "closed-loop", "concurrency": c, "achieved_rps": r, "offered_rps": 0.0,
               "objective": {"sustained": ok}} for c, r, ok in ((1, 10.0, True), (2, 19.0, True), (4, 21.0, False))]
    capacity = capacity_summary(levels)
    assert capacity["max_sustained_concurrency"] == 2 and capacity["max_sustained_rps"] == 19.0
    assert capacity["first_unsustained_concurrency"] == 4 and capacity["limited_by"] == "model"
    load = LoadConfig.model_validate({"concurrency": {"start": 1, "max": 8, "factor": 2}, "duration_s": 5})
    assert plan_text(load) == "concurrency 1,2,4,8 each 5s"  # the report's context: runs compare like with like


PROFILE = """
target:
  url: {url}
  protocol: {protocol}
  model: digits
  timeout_s: 10
  ready_timeout_s: 30
  generation: {{stream: {stream}, max_tokens: 8}}
dataset: {{path: {holdout}, {fields}, label: label, id: id{match}}}
load:
  {load}
objective: {{latency_ms: 2000, {objective}}}
resources: {{settle_s: 0}}
report: {{path: report.json}}
history: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def holdouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("generative")
    write_text_holdout(directory / "text.jsonl")
    write_holdout(directory / "digits.jsonl")
    return directory


async def profile(directory: Path, url: str, protocol: str = "openai-chat", stream: bool = True,
                  load: str = "concurrency: [1, 4]\n  duration_s: 1.0", objective: str = "ttft_ms: 1000, tpot_ms: 200",
                  match: str = ", match: regex, pattern: 'digit is (\\d)'", states: list[RunState] | None = None,
                  ) -> dict[str, Any]:
    text = PROFILE.format(url=url, protocol=protocol, stream=str(stream).lower(), load=load, objective=objective,
                          holdout="text.jsonl", fields="prompt: prompt", match=match)
    state = new_state(parse_config(text, directory / "profile.yaml"))
    if states is not None:
        states.append(state)
    return await execute(state)


@pytest.mark.slow
async def test_a_streaming_chat_model_is_profiled_over_a_concurrency_sweep(holdouts: Path,
                                                                            example_server: Any) -> None:
    states: list[RunState] = []
    report = await profile(holdouts, example_server[1], states=states)
    assert report["run"]["status"] == "completed"
    jsonschema.Draft202012Validator(report_schema()).validate(report)
    assert report["load"]["mode"] == "closed-loop" and report["capacity"]["method"] == "concurrency"
    stages = [s for s in report["stages"] if not s["warmup"]]
    assert [s["concurrency"] for s in stages] == [1, 4]
    for stage in stages:
        assert stage["errors"] == 0, stage["error_examples"]
        assert stage["mode"] == "closed-loop" and stage["completed"] > 0
        assert stage["timed_requests"] == stage["completed"]
        assert stage["output_tokens"] == 8 * stage["completed"]  # from usage: max_tokens 8
        assert stage["token_counts"] == "usage"
        # The example model's first token is due 50 ms after the request arrives, then one every 10 ms.
        assert stage["ttft_ms"]["p50"] >= 49
        assert stage["tpot_ms"]["p50"] >= 9
        assert stage["itl_ms"]["max"] >= 9
        assert stage["latency_ms"]["p50"] >= 49 + 7 * 9
        assert stage["goodput_rps"] is not None and stage["goodput_rps"] <= stage["achieved_rps"] + 1e-9
    # Four in flight answer more per second than one (the example model overlaps requests).
    assert stages[1]["achieved_rps"] > stages[0]["achieved_rps"]
    assert report["capacity"]["max_sustained_concurrency"] in (1, 4, None)
    accuracy = report["accuracy"]
    assert accuracy["match"] == "regex" and accuracy["scored"] == 360
    assert accuracy["regex_match"] > 0.9  # the digits classifier behind the text
    assert accuracy["consistency"]["inconsistent"] == 0 and accuracy["consistency"]["changed_share"] == 0.0
    assert report["metrics"]["regex_match"] == accuracy["regex_match"]
    assert report["metrics"]["ttft_p99_ms"] is not None
    # The dashboard's token panels find their families, with samples, in the run's /metrics exposition.
    registry = CollectorRegistry()
    registry.register(RunCollector(lambda: states[0]))
    samples = [sample for family in text_string_to_metric_families(generate_latest(registry).decode())
               for sample in family.samples]
    for where, expr in dashboard_queries(generative=True):
        name = expr.split("{", 1)[0]
        wanted = {"50", "99"} if "percentile" in expr else {None}
        found = {s.labels.get("percentile") for s in samples if s.name == name and s.labels["model"] == "digits"}
        assert wanted <= found, f"{where}: {expr}"


@pytest.mark.slow
async def test_whole_completions_are_profiled_open_loop_with_token_counts(holdouts: Path, example_server: Any) -> None:
    report = await profile(holdouts, example_server[1], protocol="openai-completions", stream=False,
                           load="stages: [{rate_rps: 10, duration_s: 1}]", objective="e2e_ms: 2000",
                           match=", match: contains")
    stage = report["stages"][-1]
    assert report["load"]["mode"] == "open-loop" and stage["mode"] == "open-loop"
    assert stage["errors"] == 0, stage["error_examples"]
    assert stage["output_tokens"] == 8 * stage["completed"]
    assert stage["timed_requests"] == 0 and stage["ttft_ms"]["p50"] is None  # a whole answer has no timeline
    assert stage["good_requests"] == stage["completed"]
    assert report["accuracy"]["match"] == "contains"


@pytest.mark.slow
async def test_a_concurrency_sweep_profiles_a_tensor_model_too(holdouts: Path, example_server: Any) -> None:
    report = await _v2_sweep(holdouts, example_server[1])
    stages = [s for s in report["stages"] if not s["warmup"]]
    assert [s["concurrency"] for s in stages] == [1, 2, 4]
    for stage in stages:
        assert stage["errors"] == 0, stage["error_examples"]
        assert stage["completed"] > 0 and stage["achieved_rps"] > 0
        assert "ttft_ms" not in stage
        assert stage["latency_ms"]["p50"] == pytest.approx(stage["service_time_ms"]["p50"], abs=0.1)  # closed: no lag
    assert report["capacity"]["method"] == "concurrency"
    # The digits model answers in a millisecond: every level holds (unless a starved machine broke p99 <= 1 s).
    assert report["capacity"]["max_sustained_concurrency"] in (1, 2, 4)
    assert report["accuracy"]["accuracy"] > 0.9


async def _v2_sweep(directory: Path, url: str) -> dict[str, Any]:
    text = f"""
target: {{url: {url}, protocol: v2-rest, model: digits, timeout_s: 5}}
dataset: {{path: digits.jsonl, inputs: pixels, label: label, id: id}}
load:
  concurrency: {{start: 1, max: 4, factor: 2}}
  duration_s: 0.5
objective: {{latency_ms: 1000}}
resources: {{settle_s: 0}}
report: {{path: report-v2.json}}
history: {{enabled: false}}
"""
    return await execute(new_state(parse_config(text, directory / "profile-v2.yaml")))


@pytest.mark.parametrize(("text", "message"), [
    ("target: {url: 'http://h', protocol: openai-chat, model: m}\ndataset: {path: d.jsonl}\n"
     "load: {stages: [{rate_rps: 1, requests: 1}]}\n", "needs 'prompt'"),
    ("target: {url: 'http://h', protocol: openai-completions, model: m}\ndataset: {path: d.jsonl, messages: m}\n"
     "load: {stages: [{rate_rps: 1, requests: 1}]}\n", "dataset.messages needs protocol openai-chat"),
    ("target: {url: 'http://h', protocol: v2-rest, model: m}\ndataset: {path: d.jsonl, prompt: p}\n"
     "load: {stages: [{rate_rps: 1, requests: 1}]}\n", "not v2-rest"),
    ("target: {url: 'http://h', protocol: openai-chat, model: m, generation: {extra_body: {stream: false}}}\n"
     "dataset: {path: d.jsonl, prompt: p}\nload: {stages: [{rate_rps: 1, requests: 1}]}\n",
     "target.generation.extra_body: 'stream' is set by the profile's own fields"),
    ("target: {url: 'http://h', protocol: openai-chat, model: m}\ndataset: {path: d.jsonl, prompt: p, match: regex}\n"
     "load: {stages: [{rate_rps: 1, requests: 1}]}\n", "match: regex needs 'pattern'"),
    ("target: {url: 'http://h', protocol: v2-rest, model: m}\ndataset: {path: d.jsonl}\n"
     "load: {concurrency: [1, 2]}\n", "'concurrency' needs 'duration_s'"),
    ("target: {url: 'http://h', protocol: v2-rest, model: m}\ndataset: {path: d.jsonl}\n"
     "load: {concurrency: [0], duration_s: 1}\n", "load.concurrency"),
])
def test_profile_mistakes_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(text, tmp_path / "p.yaml")
