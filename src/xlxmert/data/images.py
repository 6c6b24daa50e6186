"""Images in and out: PIL ⇄ tensors in [-1, 1], with one-line errors for unreadable files.

Convention for the whole package: ``images: FloatTensor[B, 3, H, W] in [-1, 1]`` (the generator's
``tanh`` range); PIL images are 8-bit RGB.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from xlxmert.errors import XLXMERTError

MIN_SIDE = 8  # pixels: a smaller image is warned about (one grid cell of the paper's 8×8 at 64 px)


def load_image(path: str | Path, size: int | None = None) -> Image.Image:
    """Open ``path`` as RGB, optionally resized to ``size``×``size`` (bicubic).

    Raises :class:`XLXMERTError` for a missing, unreadable or corrupt file.
    """
    path = Path(path)
    if path.is_dir():
        raise XLXMERTError(f"{path} is a folder, not an image; give an image file (.png, .jpg)")
    if not path.is_file():
        raise XLXMERTError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise XLXMERTError(
            f"{path} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS:,} pixels); resize it first"
        ) from None
    except UnidentifiedImageError:
        raise XLXMERTError(f"cannot read image {path}: not an image file; give a .png or .jpg") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise XLXMERTError(f"cannot read image {path}: {str(exc).splitlines()[0]}") from None
    if size is not None and min(img.size) < MIN_SIDE:
        warnings.warn(
            f"image {path} is only {img.size[0]}×{img.size[1]} pixels; upscaled to {size}×{size}, "
            "it shows the model next to nothing",
            UserWarning,
            stacklevel=2,
        )
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return img


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """``FloatTensor[3, H, W] in [-1, 1]`` from an RGB PIL image."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).div(127.5).sub(1.0)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """RGB PIL images from ``FloatTensor[B, 3, H, W] in [-1, 1]`` (or one ``[3, H, W]``)."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    arr = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def image_grid(
    images: list[Image.Image], columns: int, pad: int = 2, fill: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Tile equally sized images into one picture, row-major, ``columns`` per row."""
    if not images:
        raise XLXMERTError("image_grid needs at least one image")
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w + (columns + 1) * pad, rows * h + (rows + 1) * pad), fill)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        grid.paste(
            img.resize((w, h)) if img.size != (w, h) else img, (pad + c * (w + pad), pad + r * (h + pad))
        )
    return grid
