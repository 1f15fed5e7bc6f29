"""Where a model's files are: a local directory, or a hub id resolved through the local
Hugging Face cache (downloaded when the hub is reachable). Light on imports on purpose: the
driver resolves the model to fingerprint it without importing torch or diffusers.
"""
from __future__ import annotations

import os
from pathlib import Path

_HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.bin", "*.model"]
_HUB_IGNORE = ["*.ckpt", "*fp16*", "*non_ema*", "*.msgpack", "*.h5", "*.onnx", "*.pt"]


class ModelUnavailableError(RuntimeError):
    """The model's weights are neither local nor downloadable from here."""


def resolve_model_dir(spec: str) -> Path:
    """A local directory as is; a hub id from the local Hugging Face cache, else downloaded."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--model {spec!r} is a file; give a model directory or a hub id")
        return path
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"--model {spec!r}: no such directory, and not a hub id of the form 'org/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_IGNORE,
                                      local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelUnavailableError(_missing_message(spec, "HF_HUB_OFFLINE is set"))
    try:
        return Path(snapshot_download(spec, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_IGNORE))
    except Exception as exc:
        raise ModelUnavailableError(_missing_message(spec, f"{type(exc).__name__}: {exc}")) from None


def _missing_message(spec: str, why: str) -> str:
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME", "~/.cache/huggingface") + "/hub"
    return (f"model {spec!r} is not in the local Hugging Face cache ({cache}) and could not be downloaded "
            f"({why}). On a machine with internet run `huggingface-cli download {spec}` and copy the cache "
            f"here, or save the model with save_pretrained and pass its directory as --model.")
