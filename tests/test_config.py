from __future__ import annotations

from pathlib import Path

import pytest

from profiler.config import load_config, parse_config
from profiler.core.errors import ConfigError

GOOD = """\
target:
  url: http://127.0.0.1:8000
  model: digits
dataset:
  path: holdout.jsonl
  inputs: pixels
  label: label
load:
  stages:
    - {rate_rps: 10, duration_s: 2}
gates:
  - {metric: f1_macro, min: 0.9}
"""


def test_good_config_anchors_relative_paths(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(GOOD)
    config = load_config(file)
    assert config.dataset.path == tmp_path / "holdout.jsonl"
    assert config.report.path == tmp_path / "report.json"
    assert config.load.stages[0].rate_rps == 10
    assert config.target.protocol == "v2-rest"
    assert config.gates[0].metric == "f1_macro"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  model: digits\n", "", "p.yaml:2: target.model: required field is missing"),
        ("url: http://127.0.0.1:8000", "url: ftp://x", "p.yaml:2: target.url: the URL has the unknown scheme 'ftp'"),
        ("rate_rps: 10", "rate_rps: 0", "p.yaml:10: load.stages.0.rate_rps: Input should be greater than 0"),
        ("rate_rps: 10", "rate_rps: -5", "p.yaml:10: load.stages.0.rate_rps"),
        ("rate_rps: 10", "rate_rps: 1e12", "load.stages.0.rate_rps: Input should be less than or equal"),
        ("duration_s: 2", "duration_s: 0", "p.yaml:10: load.stages.0.duration_s"),
        ("  stages:\n    - {rate_rps: 10, duration_s: 2}\n", "  stages: []\n", "p.yaml:9: load.stages"),
        ("  label: label\n", "  label: label\n  colour: red\n", "p.yaml:8: dataset.colour: unknown field"),
        ("metric: f1_macro", "metric: f2", "p.yaml:12: gates.0.metric: unknown metric 'f2'"),
        ("min: 0.9", "min: lots", "gates.0.min: Input should be a valid number"),
        ("{metric: f1_macro, min: 0.9}", "{metric: f1_macro}", "gates.0: a gate needs 'min', 'max' or 'change'"),
        ("target:", "target: [", "p.yaml:3: invalid YAML"),
    ],
)
def test_bad_config_names_file_line_and_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(old, new), tmp_path / "p.yaml")
    assert expected in str(info.value).replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_config_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        parse_config(text, tmp_path / "p.yaml")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_relative_config_dir_anchors_history_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "p.yaml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("demo/p.yaml"))
    assert config.report.path == Path("demo/report.json")
    assert config.history.path is not None and config.history.path.parent == Path("demo")


def test_the_readme_profile_parses():
    """The annotated profile in README.md is what a new user copies: it must stay a valid profile."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    match = re.search(r"```yaml\n(target:.*?)```", readme, re.S)
    assert match is not None
    config = parse_config(match.group(1), Path("profile.yaml"))
    assert config.target.protocol == "v2-rest" and config.load.client == "lean"
