"""Finding a metric network's weights file: an explicit path, else the torch cache, else a
download where the network allows it, else a clear error before any work starts.

Metric networks (FID's Inception, FaceNet, LPIPS backbones) are published as single files at
fixed URLs and cached by torch under ``$TORCH_HOME`` (default ``~/.cache/torch``). Machines
without internet access need the file put in place by hand; the error says which file and
where.
"""
from __future__ import annotations

import os
from pathlib import Path


class WeightsUnavailableError(RuntimeError):
    """A metric's weights file is neither given, nor cached, nor downloadable here."""


def torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch")


def find_weights(filename: str, cache_subdir: str, url: str | None, explicit: str | os.PathLike | None = None,
                 what: str = "weights", allow_download: bool = True) -> Path:
    """Return a local path to ``filename``.

    Order: ``explicit`` (must exist), then ``$TORCH_HOME/<cache_subdir>/<filename>``, then a
    download from ``url`` into that cache (skipped when ``allow_download`` is false or
    ``HF_HUB_OFFLINE``/``TORCH_OFFLINE`` is set). Raises WeightsUnavailableError naming the
    file, the cache path and the URL.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"{what}: the given weights file {path} does not exist")
        return path
    cached = torch_home() / cache_subdir / filename
    if cached.is_file():
        return cached
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("TORCH_OFFLINE", "HF_HUB_OFFLINE"))
    why = "downloads are disabled (offline)"
    if url and allow_download and not offline:
        try:
            import torch.hub

            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cached), progress=False)
            return cached
        except Exception as exc:   # no route to the URL: fall through to the explanation
            why = f"the download failed ({type(exc).__name__}: {str(exc)[:200]})"
            if cached.exists():
                cached.unlink()
    error = WeightsUnavailableError(
        f"{what}: weights file {filename!r} not found and {why}. Download it"
        + (f" from {url}" if url else "") + f" on a machine with internet access and put it at {cached} "
        f"(or set TORCH_HOME, or pass its path explicitly).")
    error.why = why                    # why there is no file: for callers that say it in fewer words
    raise error
