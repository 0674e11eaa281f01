"""Tests for the offline tiny Llama model writer."""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from tui_tuner.sim.tiny_model import (
    FILES,
    MARKER_FILE,
    TinyModelInfo,
    ensure_tiny_model,
    to_bf16,
    write_tiny_model,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "model"
    write_tiny_model(directory, seed=0)
    return directory


def read_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    assert size % 8 == 0
    header = json.loads(raw[8 : 8 + size])
    return header, raw[8 + size :]


def digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def test_writes_all_files(tmp_path: Path) -> None:
    info = write_tiny_model(tmp_path / "m", seed=3)
    assert isinstance(info, TinyModelInfo)
    assert info.path == tmp_path / "m"
    assert info.vocab_size == 3072
    assert info.num_parameters == 1_081_984
    assert not info.reused
    assert sorted(info.files) == sorted(FILES)
    assert sorted(p.name for p in info.path.iterdir()) == sorted(FILES)  # no temp files left
    marker = json.loads((info.path / MARKER_FILE).read_text())
    assert marker["seed"] == 3
    assert "version" in marker


def test_config(model_dir: Path) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["model_type"] == "llama"
    expected = {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "vocab_size": 3072,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "dtype": "bfloat16",
        "hidden_act": "silu",
    }
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["hidden_size"] == cfg["num_attention_heads"] * cfg["head_dim"]
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert tok.id_to_token(cfg["bos_token_id"]) == "<|begin_of_text|>"
    assert tok.id_to_token(cfg["eos_token_id"]) == "<|end_of_text|>"
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_cfg["model_max_length"] == 2048
    assert "add_generation_prompt" in tok_cfg["chat_template"]


def test_safetensors_layout(model_dir: Path) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    header, data = read_safetensors(model_dir / "model.safetensors")
    assert header.pop("__metadata__") == {"format": "pt"}
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q, kv = (
        cfg["num_attention_heads"] * cfg["head_dim"],
        cfg["num_key_value_heads"] * cfg["head_dim"],
    )
    expected = {
        "model.embed_tokens.weight": [v, h],
        "model.norm.weight": [h],
        "lm_head.weight": [v, h],
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        expected |= {
            p + "self_attn.q_proj.weight": [q, h],
            p + "self_attn.k_proj.weight": [kv, h],
            p + "self_attn.v_proj.weight": [kv, h],
            p + "self_attn.o_proj.weight": [h, q],
            p + "mlp.gate_proj.weight": [i, h],
            p + "mlp.up_proj.weight": [i, h],
            p + "mlp.down_proj.weight": [h, i],
            p + "input_layernorm.weight": [h],
            p + "post_attention_layernorm.weight": [h],
        }
    assert {name: t["shape"] for name, t in header.items()} == expected
    spans = sorted(t["data_offsets"] for t in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous, no overlap
    total = 0
    for t in header.values():
        assert t["dtype"] == "BF16"
        count = int(np.prod(t["shape"]))
        assert t["data_offsets"][1] - t["data_offsets"][0] == count * 2
        total += count
    assert total == 1_081_984 == write_tiny_model(model_dir).num_parameters

    def tensor(name: str) -> np.ndarray[Any, Any]:
        start, end = header[name]["data_offsets"]
        bits = np.frombuffer(data[start:end], dtype="<u2").astype(np.uint32) << 16
        values: np.ndarray[Any, Any] = bits.view(np.float32).reshape(header[name]["shape"])
        return values

    assert np.all(tensor("model.norm.weight") == 1.0)
    q_proj = tensor("model.layers.0.self_attn.q_proj.weight")
    assert 0.018 < float(q_proj.std()) < 0.022 and abs(float(q_proj.mean())) < 0.002


def test_bf16_rounding() -> None:
    values = np.array([1.0, -2.0, 0.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20], np.float32)
    # exact, exact, exact, tie -> even (down), tie -> even (up), above tie -> up
    assert to_bf16(values).tolist() == [0x3F80, 0xC000, 0x0000, 0x3F80, 0x3F82, 0x3F81]


def test_tokenizer_round_trip(model_dir: Path) -> None:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert tok.get_vocab_size() == 3072
    text = "Hello world, this is a test."
    enc = tok.encode(text)
    assert enc.ids[0] == tok.token_to_id("<|begin_of_text|>")  # BOS prepended, Llama style
    assert len(enc.ids) < len(text)  # merges were learned
    assert tok.decode(enc.ids) == text


def test_deterministic_and_seeded(tmp_path: Path) -> None:
    a = digests(write_tiny_model(tmp_path / "a", seed=0).path)
    b = digests(write_tiny_model(tmp_path / "b", seed=0).path)
    c = digests(write_tiny_model(tmp_path / "c", seed=1).path)
    assert a == b
    assert c["model.safetensors"] != a["model.safetensors"]
    assert c["tokenizer.json"] == a["tokenizer.json"]  # tokenizer does not depend on the seed


def test_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    write_tiny_model(tmp_path / "m")
    assert time.perf_counter() - start < 10


def test_ensure_does_not_rewrite(tmp_path: Path) -> None:
    first = ensure_tiny_model(tmp_path / "m")
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    second = ensure_tiny_model(tmp_path / "m")
    assert second.reused and second.path == first.path
    assert {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()} == mtimes
    # A different seed or overwrite=True rewrites in place.
    assert not ensure_tiny_model(tmp_path / "m", seed=7).reused
    assert json.loads((first.path / MARKER_FILE).read_text())["seed"] == 7
    assert not write_tiny_model(tmp_path / "m", seed=7, overwrite=True).reused


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="foreign"):
        write_tiny_model(foreign)
    with pytest.raises(ValueError, match="not a tui-tuner tiny model"):
        ensure_tiny_model(foreign)
    with pytest.raises(ValueError):
        write_tiny_model(foreign, overwrite=True)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_empty_directory_is_fine(tmp_path: Path) -> None:
    assert not write_tiny_model(tmp_path).reused
