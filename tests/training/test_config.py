"""Config: YAML + ``--set`` overrides into dataclasses; every error names its key."""

from __future__ import annotations

import io

import pytest
import torch
import yaml

from padless.runtime.options import ConfigError
from padless.training.config import (
    Config,
    TrainConfig,
    apply_overrides,
    bundled_configs,
    load_config,
)


def test_bundled_configs_load_and_tutorial_has_the_tutorials_values() -> None:
    assert {"chatbot", "tutorial"} <= set(bundled_configs())
    load_config("chatbot")
    cfg = load_config("tutorial")
    m, t = cfg.model, cfg.train
    assert (m.hidden_size, m.num_layers, m.attention, m.dropout) == (500, 2, "dot", 0.1)
    assert (t.batch_size, t.max_tokens, t.teacher_forcing_ratio, t.clip) == (64, None, 1.0, 50.0)
    assert (t.lr, t.decoder_lr_ratio) == (1e-4, 5.0)


def test_overrides_parse_values_as_yaml() -> None:
    cfg = load_config("tutorial", [
        "model.hidden_size=256", "train.lr=3e-4", "train.max_tokens=1000",
        "train.batch_size=null", "model.shared_embeddings=false", "train.betas=[0.8, 0.9]",
        "train.clip=1",
    ])
    assert cfg.model.hidden_size == 256
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)  # "3e-4" is a str in YAML 1.1
    assert (cfg.train.batch_size, cfg.train.max_tokens) == (None, 1000)
    assert cfg.model.shared_embeddings is False
    assert cfg.train.betas == (0.8, 0.9)
    assert cfg.train.clip == 1.0 and isinstance(cfg.train.clip, float)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.lrr=1"], "train.lrr"),
        (["modle.hidden_size=3"], "modle"),
        (["model.hidden_size=abc"], "model.hidden_size"),
        (["model.hidden_size=2.5"], "model.hidden_size"),
        (["model.hidden_size=true"], "model.hidden_size"),
        (["train.lr=fast"], "train.lr"),
        (["train.lr=-1"], "train.lr"),
        (["train.precision=fp8"], "train.precision"),
        (["train.decay=exp"], "train.decay"),
        (["train.accumulate=0"], "train.accumulate"),
        (["train.label_smoothing=2"], "train.label_smoothing"),
        (["train.max_tokens=500"], "train.max_tokens"),  # with batch_size also set
        (["train.betas=[0.9]"], "train.betas"),
        (["train.warmup_steps=-1"], "train.warmup_steps"),
        (["train.device=gpu"], "train.device"),
        (["train=3"], "train"),
        (["model.attention=luong"], "attention"),  # ModelConfig's own check, placed
        (["model.hidden_size.x=1"], "model.hidden_size"),
    ],
)
def test_errors_name_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("tutorial", overrides)
    assert key in str(info.value)


@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-.inf", "1e999"])
@pytest.mark.parametrize("key", ["train.lr", "train.weight_decay", "train.max_time",
                                 "train.clip", "train.label_smoothing", "model.dropout"])
def test_every_float_must_be_finite(key: str, value: str) -> None:
    """NaN passed every range check (all comparisons are False) and inf passed "> 0"."""
    with pytest.raises(ConfigError, match=rf"^{key}: expected a finite number"):
        load_config(None, [f"{key}={value}"])


def test_python_values_are_checked_too() -> None:
    for kwargs in ({"lr": float("inf")}, {"weight_decay": float("nan")},
                   {"betas": (0.9, float("nan"))}, {"max_time": float("inf")}):
        with pytest.raises(ConfigError, match="expected (a )?finite number"):
            TrainConfig(**kwargs)
    with pytest.raises(ConfigError, match="train.seed"):
        TrainConfig(seed=2**40)


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key.*did you mean train\.lr\?"):
        load_config(None, ["train.lrr=1"])


def test_model_errors_say_they_are_in_the_model_section() -> None:
    with pytest.raises(ConfigError, match=r"^model\.dropout: must be a finite number >= 0 and < 1"):
        load_config(None, ["model.dropout=1.5"])


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.lr"])


def test_yaml_file_config_and_its_errors(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  hidden_size: 64\ntrain:\n  max_steps: 7\n")
    cfg = load_config(str(path))
    assert (cfg.model.hidden_size, cfg.train.max_steps) == (64, 7)
    assert cfg.model.num_layers == 2  # unspecified keys keep their defaults

    path.write_text("train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml:\d+: not valid YAML"):
        load_config(str(path))
    path.write_text("train:\n  warmup: 10\n")
    with pytest.raises(ConfigError, match=r"train\.warmup: unknown key.*train\.warmup_steps"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="nosuch.*bundled: "):
        load_config("nosuch")
    path.write_bytes(b"train:\n  lr: \xff\n")
    with pytest.raises(ValueError, match=r"mine\.yaml: not UTF-8 text \(byte 14"):
        load_config(str(path))


# 650 bytes that yaml.safe_load expands to 9**9 strings, whose repr took minutes and 2 GB
LAUGHS = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
]


def test_yaml_aliases_are_refused_in_files_and_overrides(tmp_path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join([*LAUGHS, "model:", "  arch: *i"]) + "\n")
    with pytest.raises(ConfigError, match=r"laughs\.yaml:2: not valid YAML \(aliases"):
        load_config(str(path))
    flow = "[" + ", ".join(["&a [lol, lol]", *["*a"] * 9]) + "]"
    with pytest.raises(ConfigError, match=r"^model\.arch: cannot parse value .{,80} \(aliases"):
        load_config(None, ["model.arch=" + flow])


@pytest.mark.parametrize(("text", "line"), [
    ("train:\n  lr: [1,\n", 3),
    ("hello\tworld\t\n", 1),  # a TSV corpus given as --config
    ("model:\n  arch: x\n   bad: indent\n", 3),
])
def test_broken_yaml_is_one_line_with_its_line(tmp_path, text, line) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}:{line}: not valid YAML (") and "\n" not in message


def test_a_huge_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["model.hidden_size=" + "x" * 10_000_000])
    assert len(str(raised.value)) < 200


def test_round_trips_through_yaml_and_the_checkpoint_are_lossless() -> None:
    cfg = load_config("chatbot", ["train.betas=[0.8, 0.95]", "train.max_time=1.5"])
    assert Config.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg
    plain = cfg.to_dict()
    assert Config.from_dict(plain) == cfg

    # Plain types only: a weights_only load gives the same dict back.
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == plain
