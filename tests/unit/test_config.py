from pathlib import Path

import pytest

from ig_airflow.config import load_run_config, parse_run_config
from ig_airflow.exceptions import ConfigError

MINIMAL = {"model": {"uri": "m"}, "data": {"input_uri": "in.parquet"}, "output": {"uri": "out/{{ ds }}"}}


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse_run_config(MINIMAL)
    assert config.ig.method == "adaptive_trapezoid"  # issue 18: nested per-row refinement
    assert config.ig.n_steps == 9 and config.ig.tolerance == 0.01 and config.ig.atol == 1e-4
    assert config.model.allow_pickle is False
    assert config.unresolved_placeholders() == ["output.uri='out/{{ ds }}'"]


def test_first_pass_default_follows_the_method() -> None:
    """adaptive_trapezoid starts from 9 points; the fixed rules (and Captum's) from 32."""
    ig = {
        k: parse_run_config({**MINIMAL, "ig": v}).ig
        for k, v in {
            "fixed": {"method": "gausslegendre"},
            "captum": {"engine": "captum"},
            "explicit": {"n_steps": 17},
        }.items()
    }
    assert (ig["fixed"].method, ig["fixed"].n_steps) == ("gausslegendre", 32)
    assert (ig["captum"].method, ig["captum"].n_steps) == ("gausslegendre", 32)
    assert (ig["explicit"].method, ig["explicit"].n_steps) == ("adaptive_trapezoid", 17)


def test_placeholders_are_filled_from_template_vars() -> None:
    config = parse_run_config(MINIMAL, template_vars={"ds": "2024-05-01"})
    assert config.output.uri == "out/2024-05-01"
    assert config.unresolved_placeholders() == []


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"ig": {"n_stepz": 3}}, "ig.n_stepz: unknown key"),
        ({"ig": {"n_steps": "many"}}, "ig.n_steps: Input should be a valid integer"),
        ({"ig": {"method": "simpson"}}, "ig.method: Input should be"),
        ({"ig": {"n_steps": 64, "max_steps": 32}}, "max_steps (32) must be >= n_steps (64)"),
        ({"ig": {"n_steps": 1}}, "adaptive_trapezoid needs n_steps >= 2"),
        (
            {"ig": {"engine": "captum", "method": "adaptive_trapezoid"}},
            "engine captum has no adaptive_trapezoid",
        ),
        ({"baseline": {"numeric": "mode"}}, "baseline.numeric: Input should be"),
        ({"colour": "blue"}, "colour: unknown key"),
    ],
)
def test_bad_keys_and_types_name_the_key_path(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({**MINIMAL, **patch}, source="run.yaml")
    assert message in str(err.value)
    assert "run.yaml" in str(err.value)


def test_missing_required_key_is_named() -> None:
    raw = {k: v for k, v in MINIMAL.items() if k != "output"}
    with pytest.raises(ConfigError, match="output: required key is missing"):
        parse_run_config(raw)


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  uri: x\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_run_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_run_config(tmp_path / "nope.yaml")


def test_config_hash_ignores_output_location_only() -> None:
    a = parse_run_config(MINIMAL)
    b = parse_run_config({**MINIMAL, "output": {"uri": "elsewhere"}})
    c = parse_run_config({**MINIMAL, "ig": {"n_steps": 64}})
    assert a.config_hash() == b.config_hash() != c.config_hash()
