from __future__ import annotations

import pytest

from pipeline.config import ConfigError, EmbedConfig, load_config

MINIMAL = "input: {uri: data/, format: jsonl}\noutput: {uri: out/}\n"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_target_harrier(tmp_path):
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL))
    assert cfg.model.name_or_path == "microsoft/harrier-oss-v1-270m"
    assert (cfg.model.pooling, cfg.model.normalize, cfg.model.max_tokens) == ("last_token", True, 32768)
    assert cfg.model.trust_remote_code is False


def test_overrides_are_typed(tmp_path):
    cfg = load_config(
        EmbedConfig,
        write(tmp_path, MINIMAL),
        ["model.max_tokens=512", "output.keep_columns=[lang, topic]", "compute.ray_address=auto"],
    )
    assert cfg.model.max_tokens == 512 and cfg.output.keep_columns == ["lang", "topic"]
    assert cfg.compute.ray_address == "auto"


@pytest.mark.parametrize(
    "extra, message",
    [
        ("model: {max_tokenz: 5}", "model.max_tokenz: Extra inputs are not permitted"),
        ("model: {max_tokens: 0}", "model.max_tokens: Input should be greater than 0"),
        ("model: {max_tokens: lots}", "model.max_tokens: Input should be a valid integer"),
        ("model: {pooling: max}", "model.pooling: Input should be 'last_token', 'mean' or 'cls'"),
        ("model: {prompt: 'a', prompt_name: query}", "either 'prompt'"),
        ("compute: {min_actors: 3, max_actors: 2}", "exceeds compute.max_actors"),
        ("output: {uri: o/, keep_columns: [embedding]}", "clash with output columns"),
    ],
)
def test_bad_values_name_the_key(tmp_path, extra, message):
    text = MINIMAL.replace("output: {uri: out/}\n", "") if extra.startswith("output") else MINIMAL
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(")", "\\)")):
        load_config(EmbedConfig, write(tmp_path, text + extra + "\n"))


def test_missing_required_section(tmp_path):
    with pytest.raises(ConfigError, match="output: Field required"):
        load_config(EmbedConfig, write(tmp_path, "input: {uri: x, format: text}\n"))


def test_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), ["model.max_tokens"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(EmbedConfig, tmp_path / "nope.yaml")
