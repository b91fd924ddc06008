"""Image processor for PLACE: chest X-rays of any encoding -> normalised 3-channel tensors.

`PlaceImageProcessor` is a transformers v5 image processor (a `TorchvisionBackend` subclass). It reads
PIL images of any mode, numpy arrays / torch tensors (uint8, uint16, other integers, floats in [0, 1]) and
file paths (PNG / JPEG, 8 or 16 bit, and DICOM through the optional `pydicom`), and runs one batched
pipeline:

1. grey level in [0, 1] (colour inputs are reduced to luminance; DICOM: modality LUT, VOI LUT / window,
   MONOCHROME1 inverted);
2. resize so the image fits inside `size` with its aspect ratio kept, then zero-pad (centred) to `size`;
3. eval: centre crop to `crop_size`; train (`do_augment=True`, or `train=True` at call time): a random crop,
   optionally a random resized crop (`augment_crop_scale` / `augment_crop_ratio`), a small random rotation
   and brightness / contrast jitter, all sampled per image and applied in one `grid_sample` call;
4. grey -> 3 channels, normalised with `image_mean` / `image_std`.

Output: `pixel_values`, float32, B x 3 x crop_height x crop_width. Training randomness comes from torch's
global generator (seed it with `torch.manual_seed`; DataLoader workers get distinct seeds).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageFile
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_transforms import group_images_by_shape, reorder_images
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack

from .postprocessing_place import PlacePostProcessingMixin

__all__ = ["ACCEPTED_LAYOUTS", "PlaceImageKwargs", "decode_image_bytes", "PlaceImageProcessor", "load_image_file", "to_grayscale_float"]

# ITU-R BT.601 luma weights: what PIL uses for RGB -> L.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_DIRECT_PIL_MODES = frozenset({"1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_FLOAT_TOLERANCE = 1e-3
#: Array layouts a single image or a batch may have; quoted by every shape error.
ACCEPTED_LAYOUTS = (
    "one image: H x W, H x W x C or C x H x W with C = 1, 3 or 4 (H x W x 2 = grey + alpha); "
    "a batch: a list of images, B x H x W x C / B x C x H x W, or B x H x W grey images with H and W > "
    "16 (an array whose last axis has 5-16 entries is refused as ambiguous: channels or image width?)"
)
_MAX_CHANNEL_LIKE = 16


class PlaceImageKwargs(ImagesKwargs, total=False):
    """Call / config arguments added by `PlaceImageProcessor` on top of the standard `ImagesKwargs`.

    do_augment (`bool`): random (train-time) instead of deterministic (eval) cropping and jitter.
    augment_crop_scale (`tuple[float, float]`): random resized crop, range of the crop's area as a fraction of
        the padded image; `None` = a plain random crop of `crop_size` pixels.
    augment_crop_ratio (`tuple[float, float]`): range of the crop's width / height (log-uniform) when
        `augment_crop_scale` is set.
    augment_rotation (`float`): maximum absolute rotation in degrees (0 = none).
    augment_brightness (`float`): brightness factor drawn from [1 - b, 1 + b] (0 = none).
    augment_contrast (`float`): contrast factor drawn from [1 - c, 1 + c] (0 = none).
    """

    do_augment: bool | None
    augment_crop_scale: tuple[float | int, float | int] | list[float | int] | None
    augment_crop_ratio: tuple[float | int, float | int] | list[float | int] | None
    augment_rotation: float | int | None
    augment_brightness: float | int | None
    augment_contrast: float | int | None


class PlaceImageProcessor(PlacePostProcessingMixin, TorchvisionBackend):
    r"""Chest X-ray image processor: grey level, aspect-preserving resize + pad, crop, 3 channels, normalise.

    Defaults: `size` 256 x 256 (the image is fitted inside it and zero-padded), `crop_size` 224 x 224,
    ImageNet mean / std, bilinear antialiased resizing, augmentation off. Every default is a class attribute
    and can be overridden at construction or per call, like any transformers image processor. `do_resize` and
    `do_rescale` are not consulted: images are always fitted to `size` and scaled by their own bit depth.

    Example:
        ```python
        >>> processor = PlaceImageProcessor()
        >>> processor(["a.png", "b.dcm"], return_tensors="pt")["pixel_values"].shape
        torch.Size([2, 3, 224, 224])
        >>> processor(images, train=True)  # random crop / rotation / jitter
        ```
    """

    valid_kwargs = PlaceImageKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BILINEAR
    size = {"height": 256, "width": 256}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    # Inputs are scaled to [0, 1] from their own bit depth while being read, so no fixed 1/255 rescale.
    do_rescale = False
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_augment = False
    augment_crop_scale = None
    augment_crop_ratio = (3 / 4, 4 / 3)
    augment_rotation = 10.0
    augment_brightness = 0.2
    augment_contrast = 0.2

    def __init__(self, **kwargs: Unpack[PlaceImageKwargs]) -> None:
        super().__init__(**kwargs)

    def preprocess(self, images: Any, *args: Any, train: bool | None = None, **kwargs: Any) -> BatchFeature:
        """Process one image or a batch. `train` is a shorthand for `do_augment` for this call."""
        if train is not None:
            kwargs["do_augment"] = bool(train)
        return super().preprocess(images, *args, **kwargs)

    def fetch_images(self, image_url_or_urls: Any) -> Any:
        """Read file paths (PNG / JPEG / DICOM, possibly nested in lists); pass image objects through."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, (str, os.PathLike)):
            return load_image_file(image_url_or_urls)
        return image_url_or_urls

    def _prepare_images_structure(self, images: Any, expected_ndims: int = 3) -> list[Any]:
        flat = _flatten_images(self.fetch_images(images))
        if not flat:
            raise ValueError("No images given: pass at least one image")
        return flat

    def process_image(self, image: Any, **kwargs: Any) -> torch.Tensor:
        """One raw image -> float32 tensor 1 x H x W in [0, 1]."""
        return torch.from_numpy(to_grayscale_float(image))[None]

    def _preprocess(
        self,
        images: list[torch.Tensor],
        size: SizeDict,
        crop_size: SizeDict,
        resample: Any,
        do_center_crop: bool,
        do_normalize: bool,
        image_mean: float | Sequence[float],
        image_std: float | Sequence[float],
        do_augment: bool,
        return_tensors: str | None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Fit + pad every image to `size`, crop (random or centre), expand to 3 channels, normalise."""
        _check_height_width(size, "size")
        batch = self._fit_and_pad(images, size, resample)
        if do_augment:
            batch = self._augment(batch, crop_size, **kwargs)
        elif do_center_crop:
            _check_height_width(crop_size, "crop_size")
            batch = self.center_crop(batch, crop_size)
        batch = _to_three_channels(batch, image_mean, image_std) if do_normalize else batch.repeat(1, 3, 1, 1)
        return BatchFeature(data={"pixel_values": batch}, tensor_type=return_tensors)

    def _fit_and_pad(self, images: list[torch.Tensor], size: SizeDict, resample: Any) -> torch.Tensor:
        """Resize each image to fit inside `size` (aspect kept), centre it on a zero canvas; stack."""
        grouped, index = group_images_by_shape(images, disable_grouping=False)
        fitted = {}
        for shape, stack in grouped.items():
            height, width = shape[-2:]
            scale = min(size.height / height, size.width / width)
            new_size = SizeDict(height=max(1, round(height * scale)), width=max(1, round(width * scale)))
            if (new_size.height, new_size.width) != (height, width):
                stack = self.resize(stack, size=new_size, resample=resample).clamp_(0.0, 1.0)
            fitted[shape] = _pad_centred(stack, size.height, size.width)
        return torch.stack(reorder_images(fitted, index))

    def _augment(
        self,
        batch: torch.Tensor,
        crop_size: SizeDict,
        augment_crop_scale: Sequence[float] | None = None,
        augment_crop_ratio: Sequence[float] | None = None,
        augment_rotation: float | None = None,
        augment_brightness: float | None = None,
        augment_contrast: float | None = None,
        **unused: Any,
    ) -> torch.Tensor:
        """Random (resized) crop + rotation as one batched affine resampling, then intensity jitter."""
        _check_height_width(crop_size, "crop_size")
        windows = _sample_crop_windows(batch.shape, crop_size, augment_crop_scale, augment_crop_ratio)
        angles = _uniform(batch.shape[0], -(augment_rotation or 0.0), augment_rotation or 0.0) * (math.pi / 180)
        theta = _crop_rotation_theta(windows, angles, height=batch.shape[-2], width=batch.shape[-1])
        grid = _affine_grid(theta, crop_size.height, crop_size.width)
        batch = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return _jitter_intensity(batch, augment_brightness or 0.0, augment_contrast or 0.0)


# ----------------------------------------------------------------------------------------------- reading


def load_image_file(path: str | os.PathLike, draft_size: int | None = None) -> np.ndarray | PIL.Image.Image:
    """Read a PNG / JPEG (any bit depth PIL supports) or DICOM file (`draft_size`: see `decode_image_bytes`).

    Returns:
        A loaded PIL image, or for DICOM a float32 H x W array in [0, 1] (modality LUT, VOI LUT / window,
        min-max scaled, MONOCHROME1 inverted so that bone is bright).

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file is unreadable, truncated or not an image (the message names the path).
        ImportError: For a DICOM file when `pydicom` is not installed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    if _is_dicom(path):
        return _read_dicom(path)
    with open(path, "rb") as handle:
        return decode_image_bytes(handle.read(), path, draft_size)


def decode_image_bytes(data: bytes, name: str | None = None, draft_size: int | None = None) -> PIL.Image.Image:
    """Decode encoded image bytes (PNG, JPEG...) fully, refusing truncated data (ValueError naming `name`).

    `draft_size`: a JPEG is decoded at the smallest DCT scale (1/2, 1/4 or 1/8, libjpeg's own scaled IDCT) that
    keeps both sides >= `draft_size` (PIL's draft mode): a 2,500 x 3,000 radiograph needed at 256 px decodes
    several times faster with `draft_size=512`. Other formats ignore it."""
    try:
        with _truncated_images_refused(), PIL.Image.open(io.BytesIO(data)) as image:
            if draft_size and image.format == "JPEG":
                image.draft(image.mode, (draft_size, draft_size))
            image.load()  # decode now, so a truncated file fails here with its name
            if image.format == "PNG":
                _check_png_complete(data)
            return image.copy()
    except Exception as error:
        raise ValueError(f"Cannot read image file {name}: {error}") from error


@contextlib.contextmanager
def _truncated_images_refused() -> Iterator[None]:
    """PIL's `LOAD_TRUNCATED_IMAGES` off while decoding: another library may have turned it on globally, and
    then a cut JPEG or PNG decodes with its missing part black instead of failing."""
    previous = PIL.ImageFile.LOAD_TRUNCATED_IMAGES
    PIL.ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        PIL.ImageFile.LOAD_TRUNCATED_IMAGES = previous


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _check_png_complete(data: bytes) -> None:
    """Raise ValueError when the PNG's image data holds fewer bytes than its header promises.

    A PNG whose IDAT stream ends early but is well-formed (chunks, CRCs and zlib all valid) passes PIL's own
    checks and decodes with the missing rows black, so the decompressed length is compared with the size
    the IHDR implies (filter byte + packed samples per row, per Adam7 pass when interlaced).
    """
    header, stream, position = None, zlib.decompressobj(), 8
    produced = 0
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            produced += len(stream.decompress(body))
        position += 12 + length
    if header is None:
        return
    width, height, depth, colour, _, _, interlace = header
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            expected += pass_height * (1 + -(-(pass_width * bits) // 8))
    if produced < expected:
        raise ValueError(f"PNG image data is truncated: {produced} of {expected} bytes (missing rows)")


def _is_dicom(path: str) -> bool:
    if os.path.splitext(path)[1].lower() in _DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def _import_pydicom_luts() -> tuple[Any, Any, Any]:
    try:
        import pydicom
    except ImportError as error:
        raise ImportError(
            "Reading DICOM files needs pydicom: `pip install pydicom` (or `pip install place-cxr[dicom]`)."
        ) from error
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return pydicom, apply_modality_lut, apply_voi_lut


def _read_dicom(path: str) -> np.ndarray:
    pydicom, apply_modality_lut, apply_voi_lut = _import_pydicom_luts()
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
        pixels = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset)
    except Exception as error:
        raise ValueError(f"Cannot read DICOM file {path}: {error}") from error
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]  # multi-frame: radiographs have one frame; keep the first
    pixels = _min_max(np.asarray(pixels, dtype=np.float32))
    if pixels.ndim == 3:
        pixels = pixels[..., :3] @ _LUMA_WEIGHTS
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


# ------------------------------------------------------------------------------------------ conversion


def _flatten_images(images: Any) -> list[Any]:
    """Nested lists / batched arrays -> flat list of single images."""
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in _flatten_images(item)]
    if isinstance(images, PIL.Image.Image):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        shape = tuple(images.shape)
        if images.ndim == 3 and not _has_channel_axis(shape):
            if shape[-1] <= _MAX_CHANNEL_LIKE or shape[-2] <= _MAX_CHANNEL_LIKE:
                # (H, W, 5) would otherwise be read as H images of W x 5 pixels
                raise ValueError(f"Ambiguous image array of shape {shape}; accepted layouts: {ACCEPTED_LAYOUTS}")
            return list(images)  # B x H x W grey batch
        if images.ndim == 4:
            return list(images)  # B x ... batch
        if images.ndim in (2, 3):
            return [images]
        raise ValueError(f"Image arrays must have 2, 3 or 4 dimensions, got shape {shape}; accepted layouts: "
                         f"{ACCEPTED_LAYOUTS}")
    raise TypeError(
        "images must be PIL images, numpy arrays, torch tensors or file paths (or lists of them), "
        f"got {type(images).__name__}"
    )


def _has_channel_axis(shape: Sequence[int]) -> bool:
    """Channel-last with 1-4 channels, or channel-first with 1, 3 or 4 (a leading 2 reads as a batch)."""
    return shape[-1] in (1, 2, 3, 4) or shape[0] in (1, 3, 4)


def to_grayscale_float(image: Any) -> np.ndarray:
    """Any supported single image -> float32 H x W array in [0, 1].

    Integer data is scaled by its bit depth: uint8 by 255, uint16 by 65535; other integer types (PIL mode
    "I", int32 / int64 arrays) by 255 when their maximum is <= 255, by 65535 when it is <= 65535, otherwise
    min-max. Floats must already lie in [0, 1]. Colour (RGB / RGBA / 3- or 4-channel) -> BT.601 luminance;
    a grey + alpha image keeps its grey channel. Channel-first and channel-last arrays are both accepted.

    Raises:
        ValueError: For float data outside [0, 1] or NaN, empty images and unsupported shapes.
        TypeError: For unsupported objects.
    """
    array = _pil_to_array(image) if isinstance(image, PIL.Image.Image) else _tensor_to_array(image)
    if array.ndim == 3:
        array = _channels_last(array)
    if (array.ndim != 2 and array.ndim != 3) or array.size == 0:
        raise ValueError(f"Unsupported image shape {array.shape}: expected H x W or H x W x C with C <= 4")
    gray = _scale_to_unit(array)
    if gray.ndim == 3:
        gray = gray[..., 0] if gray.shape[-1] <= 2 else gray[..., :3] @ _LUMA_WEIGHTS
    return np.ascontiguousarray(gray, dtype=np.float32)


def _pil_to_array(image: PIL.Image.Image) -> np.ndarray:
    if image.mode in _DIRECT_PIL_MODES:
        return np.asarray(image)
    if image.mode in ("LA", "La"):
        return np.asarray(image)[..., 0]
    return np.asarray(image.convert("RGB"))


def _tensor_to_array(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.float().numpy() if image.dtype == torch.bfloat16 else image.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"Unsupported image type {type(image).__name__}")
    return image


def _channels_last(array: np.ndarray) -> np.ndarray:
    if array.shape[-1] in (1, 2, 3, 4):
        return array
    if array.shape[0] in (1, 3, 4):
        return np.moveaxis(array, 0, -1)
    raise ValueError(f"Cannot find the channel axis of an image of shape {array.shape}; accepted layouts: "
                     f"{ACCEPTED_LAYOUTS}")


def _scale_to_unit(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return _check_unit_float(array.astype(np.float32, copy=False))
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Unsupported image dtype {array.dtype}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    low, high = int(array.min()), int(array.max())
    if low >= 0 and high <= 65535:
        return array.astype(np.float32) / (255.0 if high <= 255 else 65535.0)
    return _min_max(array.astype(np.float64)).astype(np.float32)


def _check_unit_float(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("Float image contains NaN or infinite values")
    if low < -_FLOAT_TOLERANCE or high > 1.0 + _FLOAT_TOLERANCE:
        raise ValueError(f"Float images must lie in [0, 1]; got values in [{low:.4g}, {high:.4g}]")
    return np.clip(array, 0.0, 1.0)


def _min_max(array: np.ndarray) -> np.ndarray:
    low, high = array.min(), array.max()
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


# ------------------------------------------------------------------------------------- tensor geometry


def _check_height_width(size: SizeDict, name: str) -> None:
    if not (size and size.height and size.width):
        raise ValueError(f"PlaceImageProcessor needs `{name}` with 'height' and 'width' keys, got {size}")


def _pad_centred(stack: torch.Tensor, height: int, width: int) -> torch.Tensor:
    pad_h, pad_w = height - stack.shape[-2], width - stack.shape[-1]
    return F.pad(stack, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def _uniform(count: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(count)


def _sample_crop_windows(
    shape: torch.Size,
    crop_size: SizeDict,
    crop_scale: Sequence[float] | None,
    crop_ratio: Sequence[float] | None,
) -> torch.Tensor:
    """Per image (centre_y, centre_x, height, width) of the crop window, in pixels of the padded image."""
    count, height, width = shape[0], shape[-2], shape[-1]
    if crop_scale is None:
        window_h = torch.full((count,), float(crop_size.height))
        window_w = torch.full((count,), float(crop_size.width))
    else:
        area = _uniform(count, *crop_scale) * height * width
        low, high = crop_ratio or (1.0, 1.0)
        ratio = torch.exp(_uniform(count, math.log(low), math.log(high)))
        window_h = torch.sqrt(area / ratio).clamp(max=height)
        window_w = torch.sqrt(area * ratio).clamp(max=width)
    # Integer offsets when the window has whole-pixel size, so a plain random crop copies pixels exactly.
    top = torch.floor(torch.rand(count) * (torch.clamp(height - window_h, min=0) + 1))
    left = torch.floor(torch.rand(count) * (torch.clamp(width - window_w, min=0) + 1))
    top = torch.where(window_h > height, (height - window_h) / 2, top)
    left = torch.where(window_w > width, (width - window_w) / 2, left)
    return torch.stack([top + window_h / 2, left + window_w / 2, window_h, window_w], dim=1)


def _crop_rotation_theta(windows: torch.Tensor, angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Affine matrices (B x 2 x 3) mapping output coordinates in [-1, 1] to the rotated crop window."""
    centre_y, centre_x, window_h, window_w = windows.unbind(dim=1)
    cos, sin = torch.cos(angles), torch.sin(angles)
    row_x = torch.stack([cos * window_w / width, -sin * window_h / width, 2 * centre_x / width - 1], dim=1)
    row_y = torch.stack([sin * window_w / height, cos * window_h / height, 2 * centre_y / height - 1], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def _affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`F.affine_grid(theta, [B, 1, height, width], align_corners=False)` as two broadcast passes (the torch
    CPU kernel builds a B x H*W x 3 matrix product and is ~20x slower on one core)."""
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    ys = ((torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1)[:, None]
    grid = torch.empty(theta.shape[0], height, width, 2)
    for axis in range(2):
        coefficients = theta[:, axis, :, None, None]
        torch.add(coefficients[:, 0] * xs + coefficients[:, 2], coefficients[:, 1] * ys, out=grid[..., axis])
    return grid


def _jitter_intensity(batch: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    """torchvision-style brightness (scale) then contrast (blend with the image mean) factors per image."""
    count = batch.shape[0]
    if brightness > 0:
        batch = (batch * _uniform(count, 1 - brightness, 1 + brightness).view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    if contrast > 0:
        mean = batch.mean(dim=(1, 2, 3), keepdim=True)
        factor = _uniform(count, 1 - contrast, 1 + contrast).view(-1, 1, 1, 1)
        batch = ((batch - mean) * factor + mean).clamp(0.0, 1.0)
    return batch


def _to_three_channels(
    batch: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]
) -> torch.Tensor:
    """B x 1 x H x W grey -> B x 3 x H x W normalised, written in one fused pass: x / std - mean / std."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1).expand(3).reshape(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1).expand(3).reshape(1, 3, 1, 1)
    return torch.addcmul(-mean_t / std_t, batch, 1.0 / std_t)


PlaceImageProcessor.register_for_auto_class("AutoImageProcessor")
