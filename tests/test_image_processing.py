"""PlaceImageProcessor: encodings, DICOM, geometry, augmentation, errors, save / load."""

import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFile
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from transformers import AutoImageProcessor

from modeling_place.processing.image_processing_place import PlaceImageProcessor, _affine_grid, load_image_file

# Two NIH ChestX-ray14 radiographs (512 x 512, 8-bit; see ATTRIBUTION.md there), beside the repository.
REAL_CXR = Path(__file__).resolve().parents[2] / "shared/data/real_cxr"
REAL_NAMES = ("nih_00000001_000.png", "nih_00027426_000.png")
#: Tolerances documented in docs/DATASETS.md ("Images"): lossless encodings agree to float rounding; a JPEG
#: re-encoded at quality 95 stays within 0.02 of the PNG after resizing (measured: <= 0.004).
LOSSLESS_ATOL, JPEG_ATOL = 1e-5, 0.02


def _test_image(height: int = 48, width: int = 40, seed: int = 0) -> np.ndarray:
    """Smooth uint8 image spanning exactly 0..255 (so min-max scaling is the identity on it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = 0.5 + 0.3 * np.sin(x / 5.0) * np.cos(y / 7.0) + 0.05 * rng.standard_normal((height, width))
    image = (image - image.min()) / (image.max() - image.min())
    return np.round(image * 255).astype(np.uint8)


def _unnormalised(**kwargs) -> PlaceImageProcessor:
    return PlaceImageProcessor(size=32, crop_size=24, do_normalize=False, **kwargs)


def _pixels(processor: PlaceImageProcessor, images, **kwargs) -> torch.Tensor:
    return processor(images, return_tensors="pt", **kwargs)["pixel_values"]


def _write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 16, **attributes) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 0
    for name, value in attributes.items():
        setattr(dataset, name, value)
    dataset.PixelData = pixels.astype("<u2" if bits == 16 else np.uint8).tobytes()
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)


def test_default_output_shape_dtype_and_config():
    processor = PlaceImageProcessor()
    pixels = _pixels(processor, [_test_image(300, 200), _test_image(64, 64)])
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == torch.float32
    grey = _pixels(PlaceImageProcessor(do_normalize=False), _test_image(300, 200))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])  # grey x 3
    assert processor.size.height == 256 and processor.crop_size.height == 224 and processor.do_augment is False


def test_same_image_in_every_encoding_gives_the_same_pixels(tmp_path):
    image8 = _test_image()
    image16 = image8.astype(np.uint16) * 257
    PIL.Image.fromarray(image8).save(tmp_path / "a8.png")
    PIL.Image.fromarray(image16).save(tmp_path / "a16.png")
    PIL.Image.fromarray(image8).save(tmp_path / "a.jpg", quality=100)
    _write_dicom(tmp_path / "a.dcm", image16)
    inputs = {
        "png8": str(tmp_path / "a8.png"),
        "png16": tmp_path / "a16.png",
        "jpeg": str(tmp_path / "a.jpg"),
        "dicom": str(tmp_path / "a.dcm"),
        "uint8": image8,
        "uint16": image16,
        "float": image8 / 255.0,
        "int64": image8.astype(np.int64),
        "channels_last_rgb": np.repeat(image8[..., None], 3, axis=2),
        "channels_first_rgb": torch.from_numpy(np.repeat(image8[None], 3, axis=0)),
        "pil_L": PIL.Image.fromarray(image8),
        "pil_I": PIL.Image.fromarray(image16.astype(np.int32)),
        "pil_F": PIL.Image.fromarray((image8 / 255.0).astype(np.float32)),
        "pil_RGBA": PIL.Image.fromarray(image8).convert("RGBA"),
        "pil_RGB": PIL.Image.fromarray(image8).convert("RGB"),
        "pil_I;16": PIL.Image.fromarray(image16),
    }
    processor = _unnormalised()
    reference = _pixels(processor, image8)
    for name, image in inputs.items():
        tolerance = 0.02 if name == "jpeg" else 1e-5
        torch.testing.assert_close(_pixels(processor, image), reference, atol=tolerance, rtol=0, msg=name)
    # One batched call over mixed inputs equals the single calls.
    batched = _pixels(processor, [inputs["png16"], inputs["dicom"], image8])
    torch.testing.assert_close(batched, reference.expand(3, -1, -1, -1), atol=1e-5, rtol=0)


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path):
    image16 = _test_image(32, 32).astype(np.uint16) * 257  # square and == size: no padding, no resizing
    _write_dicom(tmp_path / "m2.dcm", image16, "MONOCHROME2")
    _write_dicom(tmp_path / "m1.dcm", image16, "MONOCHROME1")
    processor = _unnormalised()
    mono2, mono1 = _pixels(processor, [str(tmp_path / "m2.dcm"), str(tmp_path / "m1.dcm")])
    torch.testing.assert_close(mono1, 1.0 - mono2, atol=1e-5, rtol=0)
    assert mono2.std() > 0.1


def test_dicom_modality_rescale_and_window_are_applied(tmp_path):
    stored = np.tile(np.arange(0, 4096, 128, dtype=np.uint16), (32, 1))  # 32 x 32 ramp of stored values
    # Stored -> HU is value - 1024; the window [-500, 500] HU is stored [524, 1524].
    _write_dicom(tmp_path / "w.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=1000)
    pixels = _pixels(PlaceImageProcessor(size=32, do_center_crop=False, do_normalize=False), str(tmp_path / "w.dcm"))
    row = pixels[0, 0, 0].numpy()
    assert np.all(row[stored[0] <= 500] == 0.0)  # below the window (HU <= -524)
    assert np.all(row[stored[0] >= 1600] == 1.0)  # above the window
    inside = (stored[0] > 600) & (stored[0] < 1500)
    assert np.all((row[inside] > 0) & (row[inside] < 1)) and np.all(np.diff(row) >= 0)


def test_aspect_ratio_is_kept_and_padding_is_centred():
    wide = np.full((16, 32), 255, dtype=np.uint8)  # fitted to 16 x 32 inside 32 x 32: 8 black rows each side
    pixels = _pixels(PlaceImageProcessor(size=32, do_center_crop=False, do_normalize=False), wide)[0, 0]
    assert torch.all(pixels[:8] == 0) and torch.all(pixels[-8:] == 0) and torch.all(pixels[8:24] == 1)
    tall = np.full((64, 16), 255, dtype=np.uint8)  # fitted to 32 x 8: 12 black columns each side
    pixels = _pixels(PlaceImageProcessor(size=32, do_center_crop=False, do_normalize=False), tall)[0, 0]
    assert torch.all(pixels[:, :12] == 0) and torch.all(pixels[:, -12:] == 0) and torch.all(pixels[:, 12:20] == 1)


def test_normalisation_uses_the_configured_mean_and_std():
    processor = PlaceImageProcessor(size=32, crop_size=24, image_mean=[0.5, 0.4, 0.3], image_std=[0.5, 0.2, 0.1])
    raw = _pixels(_unnormalised(), _test_image())
    expected = (raw - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.2, 0.1]).view(1, 3, 1, 1)
    torch.testing.assert_close(_pixels(processor, _test_image()), expected)


def test_plain_random_crop_copies_an_exact_window():
    image = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    processor = _unnormalised(augment_rotation=0, augment_brightness=0, augment_contrast=0)
    crops = _pixels(processor, [image] * 6, train=True)[:, 0]
    windows = torch.from_numpy(image).unfold(0, 24, 1).unfold(1, 24, 1).reshape(-1, 24, 24)  # all 81 windows
    offsets = set()
    for crop in crops:
        distances = (windows - crop).abs().amax(dim=(1, 2))
        assert distances.min() < 1e-5
        offsets.add(int(distances.argmin()))
    assert len(offsets) > 1  # the window moves between images


def test_augmentation_is_random_seeded_and_off_for_eval():
    image = _test_image()
    processor = PlaceImageProcessor(size=32, crop_size=24, augment_crop_scale=(0.5, 1.0))
    torch.manual_seed(3)
    first = _pixels(processor, [image, image], train=True)
    torch.manual_seed(3)
    again = _pixels(processor, [image, image], do_augment=True)
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1])  # per-image draws
    assert torch.equal(_pixels(processor, image), _pixels(processor, image, train=False))
    augmenting = PlaceImageProcessor(size=32, crop_size=24, do_augment=True)
    assert not torch.equal(
        _pixels(augmenting, [image] * 4), _pixels(augmenting, image, train=False).expand(4, -1, -1, -1)
    )


def test_truncated_and_non_image_files_raise_value_error_naming_the_path(tmp_path):
    PIL.Image.fromarray(_test_image(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.png").write_text("not an image")
    processor = PlaceImageProcessor()
    for name in ("cut.png", "notes.png"):
        with pytest.raises(ValueError, match=re.escape(str(tmp_path / name))):
            processor(str(tmp_path / name))
    (tmp_path / "cut.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1\2\3")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "cut.dcm"))):
        processor(str(tmp_path / "cut.dcm"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing.png"))):
        processor(str(tmp_path / "missing.png"))


def test_missing_pydicom_gives_an_install_hint(tmp_path, monkeypatch):
    _write_dicom(tmp_path / "a.dcm", _test_image(8, 8).astype(np.uint16))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail
    with pytest.raises(ImportError, match="pip install pydicom"):
        PlaceImageProcessor()(str(tmp_path / "a.dcm"))


def test_fast_affine_grid_matches_torch():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.affine_grid(theta, [5, 1, 7, 9], align_corners=False)
    torch.testing.assert_close(_affine_grid(theta, 7, 9), expected)


def test_bad_inputs_raise_clear_errors():
    processor = PlaceImageProcessor()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        processor(np.full((8, 8), 2.0))
    with pytest.raises(ValueError, match="NaN"):
        processor(np.full((8, 8), np.nan))
    with pytest.raises(TypeError, match="dict"):
        processor({"image": 1})


def test_save_and_load_with_auto_image_processor(tmp_path):
    processor = PlaceImageProcessor(size=64, crop_size=48, augment_crop_scale=(0.6, 1.0), augment_rotation=5)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "image_processing_place.py").is_file()  # shipped for trust_remote_code loading
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is PlaceImageProcessor
    assert list(loaded.augment_crop_scale) == [0.6, 1.0] and loaded.augment_rotation == 5
    image = _test_image(70, 50)
    assert torch.equal(_pixels(loaded, image), _pixels(processor, image))
    torch.manual_seed(0)
    train_a = _pixels(loaded, image, train=True)
    torch.manual_seed(0)
    assert torch.equal(train_a, _pixels(processor, image, train=True))


# ----------------------------------------------------------------------------------------------- real radiographs


def _real(name: str) -> np.ndarray:
    path = REAL_CXR / name
    if not path.is_file():
        pytest.fail(f"real radiograph missing: {path} (shared/data/real_cxr must sit beside the repository)")
    return np.asarray(PIL.Image.open(path))


def _min_max(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float64)
    return ((array - array.min()) / (array.max() - array.min())).astype(np.float32)


def _voi_lut_item(entries: int, first: int) -> Dataset:
    """A VOI LUT table stored value v -> 100 + (v - first)^2, 16-bit output."""
    item = Dataset()
    item.LUTDescriptor = [entries, first, 16]
    item.add_new(0x00283006, "US", [100 + v * v for v in range(entries)])
    return item


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_radiograph_through_every_encoding(tmp_path, name):
    """PNG as given, JPEG, 16-bit PNG and DICOM (MONOCHROME1/2, rescale, window, VOI LUT table) written from the
    same pixels give the processor's pixels of the array, within the documented tolerance."""
    pixels = _real(name)
    processor = PlaceImageProcessor(do_normalize=False)
    reference = _pixels(processor, pixels)
    minmaxed = _pixels(processor, _min_max(pixels))  # DICOM is min-max scaled (documented)
    assert reference.std() > 0.1  # a real image, not a blank
    PIL.Image.fromarray(pixels).save(tmp_path / "q95.jpg", quality=95)
    sixteen = pixels.astype(np.uint16) * 257
    PIL.Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    _write_dicom(tmp_path / "m2.dcm", sixteen)
    _write_dicom(tmp_path / "m1.dcm", 65535 - sixteen, "MONOCHROME1")
    _write_dicom(tmp_path / "rescaled.dcm", sixteen // 16, RescaleSlope=2, RescaleIntercept=-1024)
    low, high = int(pixels.min()), int(pixels.max())  # a window exactly over the stored range: linear, no clipping
    _write_dicom(tmp_path / "window.dcm", pixels, bits=8, WindowCenter=(low + high + 1) / 2, WindowWidth=high - low + 1)
    # A non-linear VOI LUT table (v -> 100 + v^2), so the test sees whether the table is applied.
    _write_dicom(tmp_path / "lut.dcm", pixels, bits=8, VOILUTSequence=[_voi_lut_item(256, 0)])
    squared = _pixels(processor, _min_max(100 + pixels.astype(np.float64) ** 2))
    cases = {
        "png": (REAL_CXR / name, reference, LOSSLESS_ATOL),
        "jpeg_q95": (tmp_path / "q95.jpg", reference, JPEG_ATOL),
        "png16": (tmp_path / "sixteen.png", reference, LOSSLESS_ATOL),
        "dicom_monochrome2": (tmp_path / "m2.dcm", minmaxed, LOSSLESS_ATOL),
        "dicom_monochrome1": (tmp_path / "m1.dcm", minmaxed, LOSSLESS_ATOL),
        "dicom_rescale": (tmp_path / "rescaled.dcm", _pixels(processor, _min_max(sixteen // 16)), LOSSLESS_ATOL),
        "dicom_window": (tmp_path / "window.dcm", minmaxed, 1e-3),  # the window's (w - 1) denominator
        "dicom_voi_lut": (tmp_path / "lut.dcm", squared, LOSSLESS_ATOL),
    }
    for case, (path, expected, tolerance) in cases.items():
        torch.testing.assert_close(_pixels(processor, str(path)), expected, atol=tolerance, rtol=0, msg=case)


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_radiograph_truncated_png_and_jpeg_are_refused(tmp_path, name, monkeypatch):
    pixels = _real(name)
    PIL.Image.fromarray(pixels).save(tmp_path / "full.png")
    PIL.Image.fromarray(pixels).save(tmp_path / "full.jpg", quality=95)
    # Missing rows with a well-formed file: IDAT recompressed from the first half of the scanlines, valid CRCs.
    _write_png_missing_rows(tmp_path / "full.png", tmp_path / "rows.png")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:-5000])
    monkeypatch.setattr(PIL.ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as another library might leave it
    processor = PlaceImageProcessor()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "rows.png")) + ".*missing rows"):
        processor(str(tmp_path / "rows.png"))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "cut.jpg")) + ".*truncated"):
        processor(str(tmp_path / "cut.jpg"))
    assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after the strict decode
    np.testing.assert_array_equal(np.asarray(load_image_file(tmp_path / "full.png")), pixels)


def _write_png_missing_rows(source: Path, target: Path) -> None:
    data, chunks, position = source.read_bytes(), [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunks.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    kept = [(kind, body) for kind, body in chunks if kind not in (b"IDAT", b"IEND")]
    kept += [(b"IDAT", zlib.compress(raw[: len(raw) // 2])), (b"IEND", b"")]
    out = data[:8] + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)) for kind, body in kept
    )
    target.write_bytes(out)


def test_ambiguous_array_shapes_are_refused_with_the_layouts():
    processor = PlaceImageProcessor()
    pixels = _real(REAL_NAMES[0])
    for shape in [(64, 64, 5), (64, 64, 12), (2, 8, 64)]:
        with pytest.raises(ValueError, match=r"Ambiguous image array of shape .*accepted layouts: one image: H x W"):
            processor(np.zeros(shape, dtype=np.uint8))
    grey_batch = np.stack([pixels, pixels[::-1]])  # B x H x W with large H, W: still a batch of two
    assert _pixels(processor, grey_batch).shape == (2, 3, 224, 224)
    rgb = np.repeat(pixels[..., None], 3, axis=2)
    assert _pixels(processor, rgb).shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="accepted layouts"):
        processor(np.zeros((2, 64, 64, 7), dtype=np.uint8))  # no channel axis in a 4-D batch


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_radiograph_through_the_readers_and_the_model(tmp_path, name):
    """The readers' `load_image` decodes the real PNG, a JPEG and a DICOM (with a VOI LUT) as the processor does,
    and a PLACE model embeds the result (finite, normalised)."""
    from modeling_place import PlaceConfig, PlaceModel
    from modeling_place.data.readers_common import load_image
    from tests.helpers import micro_config

    pixels = _real(name)
    PIL.Image.fromarray(pixels).save(tmp_path / "q95.jpg", quality=95)
    _write_dicom(tmp_path / "lut.dcm", pixels, bits=8, VOILUTSequence=[_voi_lut_item(256, 0)])
    processor = PlaceImageProcessor(do_normalize=False)
    for path, tolerance in ((REAL_CXR / name, LOSSLESS_ATOL), (tmp_path / "q95.jpg", JPEG_ATOL), (tmp_path / "lut.dcm", 1 / 255)):
        torch.testing.assert_close(_pixels(processor, load_image(path)), _pixels(processor, str(path)),
                                   atol=tolerance, rtol=0, msg=str(path))
    config = PlaceConfig(**micro_config())
    model = PlaceModel(config).eval()
    batch = PlaceImageProcessor(size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32})(
        [load_image(REAL_CXR / name)], return_tensors="pt")
    with torch.no_grad():
        embeds = model.get_image_features(batch["pixel_values"]).pooler_output
    assert torch.isfinite(embeds).all() and torch.allclose(embeds.norm(dim=-1), torch.ones(1))
