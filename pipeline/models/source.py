"""Where a model's files are (a local directory, or a hub id resolved through the local
Hugging Face cache, downloaded when the hub is reachable), what kind of model they hold, and
whether its configs are sound. Light on imports on purpose: the driver resolves, checks and
fingerprints the model before it starts Ray, without importing torch or diffusers, so a broken
model directory fails in one line instead of in every worker.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.errors import UserError

_HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.bin", "*.model"]
_HUB_IGNORE = ["*.ckpt", "*fp16*", "*non_ema*", "*.msgpack", "*.h5", "*.onnx", "*.pt"]


class ModelUnavailableError(UserError):
    """The model's weights are neither local nor downloadable from here."""


def resolve_model_dir(spec: str) -> Path:
    """A local directory as is; a hub id from the local Hugging Face cache, else downloaded."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"--model {spec!r} is a file; give a model directory or a hub id")
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


def published_model(spec: str, fingerprint: str) -> dict:
    """How a published sample names its model: a hub id as given; a local directory by its
    folder name only (the path as typed, ``/home/name/...``, says who made the data and where),
    and in both cases the content fingerprint the run directory was named with, which tells one
    model from another whatever it is called."""
    path = Path(spec).expanduser()
    name = (path.name or path.resolve().name) if path.is_dir() else spec
    return {"model": name, "model_fingerprint": fingerprint or None}


def _missing_message(spec: str, why: str) -> str:
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME", "~/.cache/huggingface") + "/hub"
    return (f"model {spec!r} is not in the local Hugging Face cache ({cache}) and could not be downloaded "
            f"({why}). On a machine with internet run `huggingface-cli download {spec}` and copy the cache "
            f"here, or save the model with save_pretrained and pass its directory as --model.")


def read_json(path: Path) -> dict:
    """A model's JSON file, or a UserError naming the file and what is wrong with it."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); re-save the model with save_pretrained") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object")
    return value


def detect_kind(model_dir: Path) -> str:
    """'pixel', 'latent', 'text-latent' or 'cold' (a restorer from jobs/train_restoration.py),
    from the directory layout."""
    if (model_dir / "cold.json").exists():
        return "cold"
    index = model_dir / "model_index.json"
    if index.exists():
        parts = {k for k in read_json(index) if not k.startswith("_")}
        if "unet" in parts and "text_encoder" in parts and "vae" in parts:
            return "text-latent"
        if "unet" in parts and ({"vqvae", "vae"} & parts):
            return "latent"
        if "unet" in parts:
            return "pixel"
        raise UserError(f"{model_dir}: model_index.json names {sorted(parts)}; expected a unet with an optional "
                        f"vqvae/vae (and text_encoder/tokenizer for text-conditioned models)")
    config = model_dir / "config.json"
    if config.exists() and read_json(config).get("_class_name") == "UNet2DModel":
        return "pixel"
    raise UserError(f"cannot tell the model kind of {model_dir}: expected model_index.json (DDPMPipeline, "
                    f"LDMPipeline or StableDiffusionPipeline layout) or a UNet2DModel config.json")


_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def component_dir(model_dir: Path, name: str) -> Path:
    """Where a pipeline component's files are: its own folder, else the root. The older
    single-network repositories (google/ddpm-*) keep model_index.json beside the UNet's
    config.json and scheduler_config.json, and diffusers' pipelines fall back to the root too."""
    folder = model_dir / name
    return folder if folder.is_dir() else model_dir


def check_model_dir(model_dir: Path) -> str:
    """The model's kind, after checking (from its JSON files alone, no weights read) that
    every component it needs is there with a config a loader can build from."""
    kind = detect_kind(model_dir)
    if kind == "cold":
        cold = read_json(model_dir / "cold.json")
        spec = cold.get("degradation")
        if not isinstance(spec, dict) or "name" not in spec or not _positive_int(spec.get("T")) \
                or not _positive_int(cold.get("resolution")):
            raise UserError(f"{model_dir / 'cold.json'}: expected a degradation with a name and T >= 1 and a resolution")
        _check_network(model_dir / "unet")
        return kind
    _check_network(component_dir(model_dir, "unet"))
    scheduler = component_dir(model_dir, "scheduler") / "scheduler_config.json"
    steps = read_json(scheduler).get("num_train_timesteps", 1000)
    if not _positive_int(steps):
        raise UserError(f"{scheduler}: num_train_timesteps must be a positive integer, got {steps!r}")
    if kind in ("latent", "text-latent"):
        index = read_json(model_dir / "model_index.json")
        _check_network(model_dir / ("vqvae" if "vqvae" in index else "vae"))
    if kind == "text-latent":
        _check_network(model_dir / "text_encoder")
        if not (model_dir / "tokenizer").is_dir():
            raise UserError(f"{model_dir}: no tokenizer/ directory (text-conditioned models need their tokenizer)")
    return kind


def _check_network(directory: Path) -> None:
    """One network's directory: a config with the fields the diffusers classes need, and weights."""
    config = read_json(directory / "config.json")
    name = config.get("_class_name") or config.get("architectures") or "?"
    widths = config.get("block_out_channels")
    if widths is not None:
        if not isinstance(widths, list) or not widths or not all(_positive_int(w) for w in widths):
            raise UserError(f"{directory / 'config.json'} ({name}): block_out_channels must be a list of positive "
                            f"integers, got {widths!r}")
        for blocks in ("down_block_types", "up_block_types"):
            types = config.get(blocks)
            if types is not None and (not isinstance(types, list) or len(types) != len(widths)):
                raise UserError(f"{directory / 'config.json'} ({name}): {blocks} must list one block per entry of "
                                f"block_out_channels ({len(widths)}), got {types!r}")
    size = config.get("sample_size")
    if size is not None and not (_positive_int(size) or (isinstance(size, list) and size
                                                           and all(_positive_int(v) for v in size))):
        raise UserError(f"{directory / 'config.json'} ({name}): sample_size must be a positive integer, got {size!r}")
    for field in ("in_channels", "out_channels", "layers_per_block", "latent_channels"):
        if field in config and not _positive_int(config[field]):
            raise UserError(f"{directory / 'config.json'} ({name}): {field} must be a positive integer, "
                            f"got {config[field]!r}")
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in directory.iterdir()):
        raise UserError(f"{directory}: no weights file (*.safetensors or *.bin) beside config.json")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
