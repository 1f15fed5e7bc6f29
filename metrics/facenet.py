"""FaceNet: facenet-pytorch's MTCNN (detection and crop) and InceptionResnetV1 (512-d,
L2-normalized embeddings), with its weights located, never silently downloaded offline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from metrics.faces import as_rgb_uint8, check_face_box, upscale_to_min_side
from metrics.weights import find_weights

FACENET_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
FACENET_WEIGHTS = {  # pretrained name -> (file, number of training identities = logits rows)
    "vggface2": ("20180402-114759-vggface2.pt", 8631),
    "casia-webface": ("20180408-102900-casia-webface.pt", 10575),
}
FACENET_THRESHOLD = 1.1   # L2 on normalized 512-d embeddings


def import_facenet():
    try:
        import facenet_pytorch
    except ImportError as exc:
        raise ImportError("facenet recognizer needs facenet-pytorch: pip install --no-deps facenet-pytorch==2.6.0 "
                          "(its pins are too old for our torch; its code runs fine)") from exc
    return facenet_pytorch


def facenet_weights_path(pretrained: str = "vggface2", explicit=None, allow_download: bool = True) -> Path:
    """Where the InceptionResnetV1 weights are (facenet caches in ``$TORCH_HOME/checkpoints``)."""
    if pretrained not in FACENET_WEIGHTS:
        raise ValueError(f"pretrained must be one of {sorted(FACENET_WEIGHTS)}, got {pretrained!r}")
    filename = FACENET_WEIGHTS[pretrained][0]
    return find_weights(filename, "checkpoints", url=FACENET_RELEASE + filename, explicit=explicit,
                        what=f"facenet InceptionResnetV1 ({pretrained})", allow_download=allow_download)


def save_random_facenet_weights(path, pretrained: str = "vggface2", seed: int = 0) -> Path:
    """Write a randomly initialized state dict with the real file's keys and shapes.

    Lets tests and speed measurements run offline: speed does not depend on weight values.
    """
    import torch

    facenet = import_facenet()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = facenet.InceptionResnetV1(pretrained=None, classify=False)
        model.logits = torch.nn.Linear(512, FACENET_WEIGHTS[pretrained][1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def load_facenet_backbone(path, device="cpu"):
    """InceptionResnetV1 in embedding mode with the weights at ``path``.

    The file also holds the training classifier (``logits.*``, one row per training identity),
    which embedding mode never uses: it is dropped, every other tensor must match. BatchNorm's
    ``num_batches_tracked`` counters are tolerated either way (older files lack them).
    """
    import torch

    facenet = import_facenet()
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    model = facenet.InceptionResnetV1(pretrained=None, classify=False)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path} is not an InceptionResnetV1 state dict: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.eval().to(device)


@dataclass
class FacenetRecognizer:
    """MTCNN + InceptionResnetV1; embeddings are L2-normalized 512-d vectors.

    ``margin=14`` pixels (in the 160x160 crop) follows facenet-pytorch's LFW evaluation.
    Crops are standardized as ``(x - 127.5) / 128`` like MTCNN(post_process=True).
    ``min_side`` applies to detection only; ``face_box="full"`` resizes the whole frame straight
    to 160x160 (bicubic; a non-square frame is stretched, not cropped).
    """

    weights: Path
    device: str = "cpu"
    face_box: str = "detect"
    min_side: int = 160
    threshold: float = FACENET_THRESHOLD
    margin: int = 14
    batch_size: int = 32
    name: str = "facenet"
    l2_normalized: bool = True
    image_size: int = 160

    @property
    def distance_rule(self) -> str:
        return f"same person if L2 of normalized 512-d facenet embeddings < {self.threshold}"

    def __post_init__(self):
        check_face_box(self.face_box)
        self._facenet = facenet = import_facenet()
        self.model = load_facenet_backbone(self.weights, self.device)
        self.mtcnn = facenet.MTCNN(image_size=self.image_size, margin=self.margin, post_process=True,
                                   select_largest=True, keep_all=False, device=self.device)

    def crops(self, images: list[np.ndarray]) -> list:
        """One standardized 3x160x160 float tensor per image, or None where no face was found."""
        import torch

        pictures = [as_rgb_uint8(im) for im in images]
        if self.face_box == "full":
            return [self._full_crop(p) for p in pictures]
        pictures = [upscale_to_min_side(p, self.min_side) for p in pictures]
        out: list = [None] * len(pictures)
        for indices in _group_by_size(pictures):   # MTCNN batches only equal-size images
            pils = [Image.fromarray(pictures[i]) for i in indices]
            with torch.inference_mode():
                boxes, _ = self.mtcnn.detect(pils)
            for i, pil, found in zip(indices, pils, boxes):
                if found is not None and len(found):
                    face = self._facenet.extract_face(pil, found[0], self.image_size, self.margin)
                    out[i] = (face - 127.5) / 128.0
        return out

    def embed_crops(self, crops) -> np.ndarray:
        """Embed a stack (or list) of standardized 3x160x160 crops; returns (N, 512) float32."""
        import torch

        batch = torch.stack(list(crops)) if not isinstance(crops, torch.Tensor) else crops
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                chunks.append(self.model(batch[start:start + self.batch_size].to(self.device)).float().cpu())
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 512), np.float32)

    def embed(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        crops = self.crops(images)
        found = [i for i, c in enumerate(crops) if c is not None]
        vectors = self.embed_crops([crops[i] for i in found]) if found else []
        out: list[np.ndarray | None] = [None] * len(crops)
        for i, v in zip(found, vectors):
            out[i] = v
        return out

    def _full_crop(self, picture: np.ndarray):
        """The whole frame resized (bicubic, aspect not kept) to the crop size, standardized."""
        import torch

        resized = Image.fromarray(picture).resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        tensor = torch.from_numpy(np.asarray(resized, dtype=np.float32).copy()).permute(2, 0, 1)
        return (tensor - 127.5) / 128.0


def _group_by_size(pictures: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(pictures):
        groups.setdefault(p.shape, []).append(i)
    return list(groups.values())
