"""Vectorised numpy rendering of chest-radiograph-like images and their findings.

Coordinates are normalised: ``u`` runs left to right and ``v`` top to bottom over ``[0, 1]``; after the small
per-patient rotation, ``du`` is the signed distance from the patient's midline and ``a = |du|`` the lateral
distance. Radiographic convention holds: the patient's RIGHT is on the image LEFT (``du < 0``).

The image is built as a density map (bright = dense) from anatomical layers, then findings add density (or
remove lung markings), and an exposure curve, quantum-like noise and blur turn it into an 8-bit radiograph.
Every finding returns a boolean pixel mask; its box is derived from the mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")
_TEXTURE_BANK = 6


def ramp(x: np.ndarray, eps: float) -> np.ndarray:
    """Cheap soft step: 0 below ``-eps/2``, 1 above ``eps/2``, linear in between (one temporary)."""
    out = x * np.float32(1.0 / eps)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def working_size(image_size: int) -> int:
    """Resolution the smooth anatomy is rendered at: half the output (at least 64 px), then upsampled."""
    return min(image_size, max(64, (image_size + 1) // 2))


def upsample(field: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float32 field to ``size`` x ``size`` (PIL, fast C path)."""
    if field.shape[0] == size:
        return field
    return np.asarray(Image.fromarray(field.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))


def upsample_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a boolean mask with bilinear interpolation and a 0.5 threshold, so edges stay smooth."""
    if mask.shape[0] == size:
        return mask
    resized = upsample(mask.astype(np.float32), size) > 0.5
    if mask.any() and not resized.any():  # a sliver thinner than the interpolation: keep it (nearest)
        resized = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return resized


@lru_cache(maxsize=8)
def _base_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] (read-only, shared between calls)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    v, u = np.meshgrid(axis, axis, indexing="ij")
    u.setflags(write=False)
    v.setflags(write=False)
    return u, v


def _bandpass_noise(rng: np.random.Generator, size: int, low: float, high: float) -> np.ndarray:
    """Band-pass filtered white noise via the FFT, standardised (used only when building cached textures)."""
    freq = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    radius = np.sqrt(freq) * size
    band = np.exp(-((radius / high) ** 2)) * (1.0 - np.exp(-((radius / max(low, 1e-3)) ** 2)))
    spectrum = np.fft.rfft2(rng.standard_normal((size, size))) * band
    noise = np.fft.irfft2(spectrum, s=(size, size))
    return ((noise - noise.mean()) / (noise.std() + 1e-8)).astype(np.float32)


@lru_cache(maxsize=8)
def _texture_bank(size: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per-size bank of (vessel ridges, smooth blobs) textures; per image one is picked and shifted.

    Ridges of band-pass noise (where it crosses zero) look like a branching vascular network, which makes
    lung markings; the smooth low-pass noise gives patchy airspace disease its irregular outline.
    """
    rng = np.random.default_rng(12345 + size)
    scale = size / 256.0
    bank = []
    for _ in range(_TEXTURE_BANK):
        band = _bandpass_noise(rng, size, 3.0, 9.0 * scale + 6.0)
        ridges = np.clip(1.0 - np.abs(band) / 0.3, 0.0, 1.0) ** 2
        blobs = _bandpass_noise(rng, size, 0.5, 10.0)
        bank.append((ridges.astype(np.float32), blobs))
    return tuple(bank)


@dataclass
class Anatomy:
    """Per-patient anatomy and acquisition parameters (all in normalised units)."""

    cx: float
    angle: float
    apex: float
    dome_right: float
    dome_left: float
    half_width: float
    mediastinum: float
    ctr: float
    rib_start: float
    projection: str
    exposure: float
    gamma: float
    noise: float
    blur: float
    gastric_bubble: bool
    texture_index: int
    texture_shift: tuple[int, int]

    @property
    def heart_v(self) -> float:
        """Vertical level of the hila / upper heart, 0.1 above the mean diaphragm."""
        return 0.5 * (self.dome_right + self.dome_left) - 0.1

    @property
    def rib_spacing(self) -> float:
        """Vertical distance between consecutive posterior ribs (about 9 above the left dome)."""
        return (self.dome_left - self.rib_start) / 9.2

    def rib_curve(self, a: np.ndarray | float) -> np.ndarray | float:
        """Top of the posterior rib arcs at lateral distance ``a``: rising from the spine, falling laterally."""
        return self.rib_start - 0.45 * a + 1.9 * a * a

    @property
    def inspiration(self) -> str:
        """Lung volume description derived from how low the diaphragm sits."""
        dome = 0.5 * (self.dome_right + self.dome_left) - self.apex
        return "low" if dome < 0.53 else ("high" if dome > 0.61 else "normal")


def sample_anatomy(rng: np.random.Generator, size: int) -> Anatomy:
    """Draw a patient: body habitus, inspiration, projection, exposure and detector properties."""
    apex = rng.uniform(0.10, 0.15)
    dome_right = apex + rng.uniform(0.50, 0.64)
    projection = "AP" if rng.random() < 0.35 else "PA"
    return Anatomy(
        cx=0.5 + rng.normal(0, 0.015), angle=rng.normal(0, 0.03), apex=apex,
        dome_right=dome_right, dome_left=dome_right + rng.uniform(0.01, 0.04),
        half_width=rng.uniform(0.33, 0.40), mediastinum=rng.uniform(0.05, 0.065),
        ctr=rng.uniform(0.38, 0.48) * (1.06 if projection == "AP" else 1.0),
        rib_start=apex - rng.uniform(0.03, 0.05), projection=projection,
        exposure=rng.uniform(0.85, 1.15), gamma=rng.uniform(0.8, 1.25), noise=rng.uniform(0.01, 0.03),
        blur=rng.uniform(0.0, 1.0), gastric_bubble=bool(rng.random() < 0.7),
        texture_index=int(rng.integers(_TEXTURE_BANK)),
        texture_shift=(int(rng.integers(size)), int(rng.integers(size))),
    )


@dataclass
class Geometry:
    """Rotated coordinate arrays and the anatomical fields that findings are placed against."""

    anatomy: Anatomy
    size: int
    du: np.ndarray
    v: np.ndarray
    a: np.ndarray
    right: np.ndarray
    lateral: np.ndarray
    dome: np.ndarray
    lung: np.ndarray
    ridges: np.ndarray
    blobs: np.ndarray
    ribs: np.ndarray | None = None

    def side_mask(self, side: str) -> np.ndarray:
        """Boolean half-image of the patient's ``side`` ("right" is the image left)."""
        if side == "bilateral":
            return np.ones_like(self.right)
        return self.right if side == "right" else ~self.right

    def zone_center(self, zone: str) -> float:
        """Vertical centre of a lung zone (thirds between apex and diaphragm)."""
        top, bottom = self.anatomy.apex, 0.5 * (self.anatomy.dome_right + self.anatomy.dome_left)
        return top + (bottom - top) * {"upper": 0.22, "middle": 0.5, "lower": 0.8}[zone]

    def to_pixel(self, du: float, v: float) -> tuple[float, float]:
        """Map a (rotated) anatomical point back to pixel coordinates (x, y)."""
        an = self.anatomy
        cos, sin = np.cos(an.angle), np.sin(an.angle)
        u = an.cx + du * cos - (v - 0.5) * sin
        y = 0.5 + du * sin + (v - 0.5) * cos
        return float(u * self.size), float(y * self.size)


def _aortic_knob(anatomy: Anatomy, du: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Widening of the mediastinum on the patient's left (image right) at the aortic arch."""
    return 0.03 * ramp(0.5 - np.abs(v - anatomy.apex - 0.15) / 0.05, 0.5) * (du > 0)


def build_geometry(anatomy: Anatomy, size: int) -> Geometry:
    """Rotate the grid and compute lung fields, lateral chest wall and diaphragm for this patient."""
    u, v0 = _base_grid(size)
    cos, sin = np.float32(np.cos(anatomy.angle)), np.float32(np.sin(anatomy.angle))
    du = (u - np.float32(anatomy.cx)) * cos + (v0 - np.float32(0.5)) * sin
    v = -(u - np.float32(anatomy.cx)) * sin + (v0 - np.float32(0.5)) * cos + np.float32(0.5)
    a = np.abs(du)
    right = du < 0
    tw = anatomy.half_width
    height = np.clip((v - anatomy.apex) / (anatomy.dome_left - anatomy.apex), 0.0, 1.2)
    lateral = tw * (0.38 + 0.62 * np.sqrt(np.clip(height * 1.7, 0.0, 1.0))) + 0.025 * height
    dome_top = np.where(right, np.float32(anatomy.dome_right), np.float32(anatomy.dome_left))
    dome = dome_top + 0.13 * ((a - 0.5 * tw) / (0.6 * tw)) ** 2
    apex_curve = anatomy.apex + 2.5 * (a - 0.5 * tw) ** 2
    eps = 0.012
    lung = ramp(v - apex_curve, eps) * ramp(lateral - a, eps) * ramp(dome - v, eps)
    lung *= ramp(a - anatomy.mediastinum - _aortic_knob(anatomy, du, v), eps)
    ridges, blobs = _texture_bank(size)[anatomy.texture_index]
    ridges = np.roll(ridges, anatomy.texture_shift, axis=(0, 1))
    blobs = np.roll(blobs, anatomy.texture_shift, axis=(1, 0))
    return Geometry(anatomy, size, du, v, a, right, lateral, dome, lung, ridges, blobs)


def heart_field(geom: Geometry, ctr: float) -> np.ndarray:
    """Soft heart silhouette sitting on the left dome; its width is ``ctr`` times the thoracic width."""
    an = geom.anatomy
    half = ctr * (an.half_width + 0.02)
    centre_du, centre_v = 0.3 * half, an.dome_left - 0.05
    tilt_cos, tilt_sin = np.float32(np.cos(0.5)), np.float32(np.sin(0.5))
    x, y = geom.du - centre_du, geom.v - centre_v
    along, across = x * tilt_cos + y * tilt_sin, y * tilt_cos - x * tilt_sin
    ellipse = (along / (1.08 * half)) ** 2 + (across / (0.75 * half)) ** 2
    return ramp(1.0 - ellipse, 0.12)


def rib_field(geom: Geometry) -> np.ndarray:
    """Curved posterior ribs with bright cortical margins plus faint anterior ribs, a few array ops each."""
    an, a, v = geom.anatomy, geom.a, geom.v
    spacing = an.rib_spacing
    phase = (v - an.rib_curve(a)) / spacing
    offset = np.abs(phase - np.floor(phase) - 0.25)
    body = ramp(0.2 - offset, 0.06)
    cortex = ramp(0.05 - np.abs(offset - 0.19), 0.06)
    posterior = (0.55 * body + 0.6 * cortex) * (phase > 0) * (phase < 11)
    posterior *= ramp(geom.lateral + 0.04 - a, 0.03) * ramp(a - 0.035, 0.02) * (0.6 + 0.4 * ramp(a - 0.1, 0.1))
    anterior_phase = (v - an.rib_start - 0.04 + 0.5 * a) / (spacing * 1.3)
    anterior = ramp(0.16 - np.abs(anterior_phase - np.floor(anterior_phase) - 0.25), 0.1)
    anterior *= (anterior_phase > 1) * (anterior_phase < 6) * ramp(a - 0.12, 0.06) * ramp(geom.lateral - a, 0.03)
    geom.ribs = posterior
    return posterior + 0.3 * anterior


def _body_and_bones(geom: Geometry) -> np.ndarray:
    """Soft tissue outline (thicker centrally), mediastinum, spine, clavicles and scapulae as density."""
    an, a, v, du = geom.anatomy, geom.a, geom.v, geom.du
    shoulder = ramp(v - an.apex + 0.1, 0.14)
    body_half = 0.12 + shoulder * (an.half_width + 0.09 - 0.12)
    thickness = np.sqrt(np.clip(1.0 - (a / body_half) ** 2, 0.0, 1.0))
    density = 0.03 + 0.5 * thickness + 0.12 * ramp(v - an.dome_left + 0.1, 0.25) * thickness
    mediastinum = an.mediastinum + _aortic_knob(an, du, v)
    density += 0.1 * ramp(0.017 + mediastinum - a, 0.03) * ramp(v - an.apex, 0.1)
    spine = ramp(0.03 - a, 0.01)
    vertebra = 0.6 + 0.4 * ramp(np.abs(np.sin(np.pi * v / 0.042)) - 0.35, 0.25)
    density += spine * (0.07 * vertebra) + 0.04 * ramp(0.01 - np.abs(a - 0.024), 0.006) * vertebra
    trachea = ramp(0.012 - np.abs(du - 0.004), 0.008) * ramp(an.apex + 0.18 - v, 0.03)
    density -= 0.1 * trachea
    clavicle_v = an.apex + 0.075 - 0.36 * a + 0.2 * a * a
    clavicle = ramp(0.011 - np.abs(v - clavicle_v), 0.008) * ramp(a - 0.04, 0.01) * ramp(0.3 - a, 0.04)
    density += 0.12 * clavicle
    scapula_edge = an.half_width - 0.07 + 0.3 * (v - an.apex) + (0.07 if an.projection == "PA" else 0.0)
    scapula = ramp(a - scapula_edge, 0.01) * ramp(an.apex + 0.3 - v, 0.05) * ramp(v - an.apex + 0.02, 0.03)
    density += 0.05 * scapula * ramp(body_half - a, 0.02)
    return density


def render_density(geom: Geometry, ctr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density of the normal chest; returns (density, lung markings, heart field) for findings to edit."""
    an = geom.anatomy
    density = _body_and_bones(geom)
    heart = heart_field(geom, ctr)
    lung = geom.lung * (1.0 - heart)
    geom.lung = lung
    depth = ramp(geom.lateral - geom.a, 0.12) * ramp(geom.v - an.apex, 0.12)
    density -= lung * (0.22 + 0.16 * depth)
    density += 0.06 * heart * ramp(geom.dome - geom.v, 0.05)
    hilum = 1.0 / (1.0 + ((geom.a - an.mediastinum - 0.04) ** 2 + 0.5 * (geom.v - an.heart_v + 0.1) ** 2) / 0.003)
    density += 0.08 * hilum * lung
    falloff = 1.0 / (1.0 + ((geom.a - 0.06) ** 2 + 0.5 * (geom.v - an.heart_v + 0.05) ** 2) / 0.02)
    markings = geom.ridges * lung * (0.05 + 0.16 * falloff)
    density += 0.1 * rib_field(geom)
    if an.gastric_bubble:
        bubble = ((geom.du - 0.16) / 0.06) ** 2 + ((geom.v - an.dome_left - 0.055) / 0.03) ** 2
        density -= 0.15 * ramp(1.0 - bubble, 0.3) * (geom.du > 0)
    return density, markings, heart


def expose(density: np.ndarray, anatomy: Anatomy, rng: np.random.Generator, size: int) -> np.ndarray:
    """Film-like tone curve, quantum-like noise and detector blur at working resolution, then upsampling.

    Everything here is smooth or already band-limited by the detector blur, so doing it on the (4x smaller)
    working grid and interpolating to ``size`` costs nothing visible and keeps generation fast.
    """
    image = 1.0 - np.exp(np.maximum(density, np.float32(0.0)) * np.float32(-2.4 * anatomy.exposure))
    image **= np.float32(anatomy.gamma * 1.1)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(anatomy.noise) * (0.4 + image)
    noise += image
    pixels = Image.fromarray((np.clip(noise, 0.0, 1.0, out=noise) * 255.0).astype(np.uint8))
    pixels = pixels.filter(ImageFilter.GaussianBlur(anatomy.blur * density.shape[0] / 256.0))
    if pixels.size[0] != size:
        pixels = pixels.resize((size, size), Image.BILINEAR)
    return np.asarray(pixels)


# ----------------------------------------------------------------------------------------------- findings
@dataclass
class Rendered:
    """One rendered finding instance: density to add, optional marking scale, mask and attributes."""

    name: str
    attributes: dict
    mask: np.ndarray
    add: np.ndarray | float = 0.0
    marking_scale: np.ndarray | float = 1.0


def _zone_ellipse(geom: Geometry, side: str, zone: str, rx: float, ry: float, rng: np.random.Generator):
    """Elliptic distance field around a random point of the given lung zone (inside the lung)."""
    centre_v = geom.zone_center(zone) + rng.uniform(-0.04, 0.04)
    an = geom.anatomy
    lateral = an.half_width * (0.8 if zone != "upper" else 0.7)
    centre_a = rng.uniform(an.mediastinum + 0.06 + rx * 0.3, max(lateral - rx * 0.3, an.mediastinum + 0.1))
    centre_du = -centre_a if side == "right" else centre_a
    return ((geom.du - centre_du) / rx) ** 2 + ((geom.v - centre_v) / ry) ** 2


def _in_lung(geom: Geometry, side: str) -> np.ndarray:
    return (geom.lung > 0.5) & geom.side_mask(side)


def render_effusion(geom: Geometry, rng: np.random.Generator, subtle: bool) -> Rendered:
    """Basal opacity with a meniscus rising laterally; small ones just blunt the costophrenic angle."""
    side = rng.choice(["right", "left", "bilateral"], p=[0.4, 0.35, 0.25])
    size = "small" if subtle else rng.choice(["small", "moderate", "large"], p=[0.45, 0.35, 0.2])
    an = geom.anatomy
    height = {"small": rng.uniform(0.03, 0.06), "moderate": rng.uniform(0.1, 0.17),
              "large": rng.uniform(0.2, 0.32)}[size] * (0.7 if subtle else 1.0)
    dome_top = np.where(geom.right, np.float32(an.dome_right), np.float32(an.dome_left))
    # The fluid fills the lateral costophrenic angle first and its meniscus climbs the lateral chest wall.
    level = dome_top + 0.05 - height - 0.07 * np.clip(geom.a / an.half_width, 0, 1) ** 2
    hemithorax = ramp(geom.lateral - geom.a, 0.02) * ramp(geom.a - an.mediastinum, 0.02)
    fluid = ramp(geom.v - level, 0.03) * geom.side_mask(side) * hemithorax * ramp(geom.dome + 0.04 - geom.v, 0.03)
    amp = rng.uniform(0.12, 0.18) if subtle else rng.uniform(0.2, 0.32)
    mask = (fluid > 0.5) & (geom.v < geom.dome + 0.02)
    return Rendered("Pleural Effusion", {"side": str(side), "size": str(size)}, mask,
                    add=amp * fluid * (0.5 + 0.5 * geom.lung), marking_scale=1.0 - 0.8 * fluid)


def render_pneumothorax(geom: Geometry, rng: np.random.Generator, subtle: bool) -> Rendered:
    """Lucent rim without lung markings along the chest wall, bounded by a thin visible pleural line."""
    side = str(rng.choice(SIDES))
    size = "small" if subtle or rng.random() < 0.5 else "large"
    an = geom.anatomy
    width = rng.uniform(0.02, 0.035) if size == "small" else rng.uniform(0.05, 0.09)
    depth = (rng.uniform(0.2, 0.35) if size == "small" else rng.uniform(0.6, 0.9)) * (an.dome_left - an.apex)
    taper = ramp(an.apex + depth - geom.v, 0.06)
    rim = width * (0.4 + 1.2 * taper) * taper
    gap = geom.lateral - geom.a - rim
    region = ramp(-gap, 0.006) * geom.side_mask(side) * (geom.lung > 0.05) * (taper > 0.05)
    line = ramp(0.004 - np.abs(gap), 0.004) * geom.side_mask(side) * (taper > 0.1)
    line *= geom.lung > 0.3
    amp = 0.07 if subtle else 0.12
    mask = (region > 0.5) & (geom.lung > 0.3)
    add = -amp * region * geom.lung + (0.07 if subtle else 0.12) * line
    return Rendered("Pneumothorax", {"side": side, "size": size}, mask, add=add,
                    marking_scale=1.0 - region)


def render_consolidation(geom: Geometry, rng: np.random.Generator, subtle: bool) -> Rendered:
    """Patchy dense airspace opacity with irregular margins and dark air bronchograms."""
    side, zone = str(rng.choice(SIDES)), str(rng.choice(ZONES, p=[0.25, 0.3, 0.45]))
    size = "small" if subtle or rng.random() < 0.5 else "large"
    radius = rng.uniform(0.04, 0.06) if size == "small" else rng.uniform(0.07, 0.11)
    field = _zone_ellipse(geom, side, zone, radius, radius * rng.uniform(0.7, 1.1), rng)
    patchy = field + 0.45 * geom.blobs
    inside = ramp(1.0 - patchy, 0.5) * geom.lung * geom.side_mask(side)
    amp = rng.uniform(0.11, 0.15) if subtle else rng.uniform(0.24, 0.38)
    bronchograms = geom.ridges * inside * (0.5 * amp)
    mask = (inside > 0.4) & _in_lung(geom, side)
    return Rendered("Consolidation", {"side": side, "zone": zone, "size": size}, mask,
                    add=amp * inside - bronchograms, marking_scale=1.0 - 0.6 * inside)


def render_lesion(geom: Geometry, rng: np.random.Generator, subtle: bool) -> Rendered:
    """Round opacity: a nodule (< 3 cm) or a mass, faint to dense."""
    side, zone = str(rng.choice(SIDES)), str(rng.choice(ZONES))
    kind = "nodule" if subtle or rng.random() < 0.65 else "mass"
    radius = rng.uniform(0.02, 0.04) if kind == "nodule" else rng.uniform(0.045, 0.075)
    field = _zone_ellipse(geom, side, zone, radius, radius, rng)
    dome = np.sqrt(np.clip(1.0 - field, 0.0, 1.0))
    amp = rng.uniform(0.12, 0.16) if subtle else rng.uniform(0.3, 0.5)
    mask = field < 1.0
    diameter_mm = int(round(radius * 2 * 350 / 5.0) * 5) if kind == "mass" else int(round(radius * 2 * 350))
    attributes = {"side": side, "zone": zone, "kind": kind, "diameter_mm": max(diameter_mm, 5),
                  "density": "faint" if subtle else "dense"}
    return Rendered("Lung Lesion", attributes, mask, add=amp * dome)


def render_atelectasis(geom: Geometry, rng: np.random.Generator, subtle: bool) -> Rendered:
    """Linear / plate-like opacity, mostly basal, slightly tilted."""
    side = str(rng.choice(SIDES))
    zone = str(rng.choice(ZONES, p=[0.1, 0.2, 0.7]))
    length, thickness = rng.uniform(0.08, 0.14), rng.uniform(0.013, 0.02) * (0.8 if subtle else 1.3)
    centre_v = geom.zone_center(zone) + (0.04 if zone == "lower" else 0.0) + rng.uniform(-0.02, 0.02)
    an = geom.anatomy
    centre_a = rng.uniform(an.mediastinum + 0.08, an.half_width - 0.08)
    tilt = rng.uniform(-0.3, 0.3)
    du = geom.du - (-centre_a if side == "right" else centre_a)
    dv = geom.v - centre_v
    along, across = du * np.cos(tilt) + dv * np.sin(tilt), -du * np.sin(tilt) + dv * np.cos(tilt)
    field = (along / length) ** 2 + (across / thickness) ** 2
    inside = ramp(1.0 - field, 0.6) * geom.lung * geom.side_mask(side)
    amp = rng.uniform(0.12, 0.16) if subtle else rng.uniform(0.3, 0.45)
    mask = (inside > 0.3) & _in_lung(geom, side)
    return Rendered("Atelectasis", {"side": side, "zone": zone}, mask, add=amp * inside)


def render_edema(geom: Geometry, rng: np.random.Generator, subtle: bool) -> Rendered:
    """Bilateral perihilar haze with indistinct (blurred) vessels."""
    severity = "mild" if subtle or rng.random() < 0.55 else "moderate"
    an = geom.anatomy
    spread = rng.uniform(0.03, 0.05)
    distance = ((geom.a - an.mediastinum - 0.04) ** 2 + 0.6 * (geom.v - an.heart_v + 0.06) ** 2) / spread
    haze = geom.lung / (1.0 + distance * distance) * (1.0 + 0.3 * geom.blobs)
    amp = rng.uniform(0.035, 0.055) if severity == "mild" else rng.uniform(0.06, 0.09)
    mask = (haze > 0.35) & (geom.lung > 0.5)
    return Rendered("Edema", {"severity": severity}, mask, add=amp * haze,
                    marking_scale=1.0 + (0.3 if severity == "mild" else 0.5) * haze)


def sample_cardiomegaly(rng: np.random.Generator, subtle: bool) -> tuple[dict, float]:
    """Severity attributes and the enlarged cardiothoracic ratio (the heart is drawn with the anatomy)."""
    severity = "mild" if subtle else str(rng.choice(["mild", "moderate", "severe"], p=[0.4, 0.4, 0.2]))
    ctr = {"mild": rng.uniform(0.52, 0.56), "moderate": rng.uniform(0.57, 0.62),
           "severe": rng.uniform(0.63, 0.7)}[severity]
    return {"severity": severity, "ctr": round(float(ctr), 3)}, ctr


def _draw_mask(geom: Geometry, polylines: list[tuple[list[tuple[float, float]], float]],
               ellipses: list[tuple[tuple[float, float], float, float]] = ()) -> np.ndarray:
    """Rasterise anatomical polylines (du, v) of given widths and filled ellipses with PIL."""
    canvas = Image.new("L", (geom.size, geom.size), 0)
    draw = ImageDraw.Draw(canvas)
    for points, width in polylines:
        pixels = [geom.to_pixel(du, v) for du, v in points]
        draw.line(pixels, fill=255, width=max(1, int(round(width * geom.size))), joint="curve")
    for (du, v), rx, ry in ellipses:
        x, y = geom.to_pixel(du, v)
        draw.rounded_rectangle([x - rx * geom.size, y - ry * geom.size, x + rx * geom.size, y + ry * geom.size],
                               radius=ry * geom.size * 0.6, fill=255)
    return np.asarray(canvas) > 0


def render_device(geom: Geometry, rng: np.random.Generator, subtle: bool, device: str) -> Rendered:
    """Endotracheal tube, central venous line or pacemaker as thin bright lines / a dense generator."""
    an = geom.anatomy
    carina = an.apex + 0.19
    # Metal is far denser than tissue; the subtle ones are thin, faint catheters.
    brightness = rng.uniform(0.35, 0.5) if subtle else rng.uniform(0.8, 1.2)
    attributes: dict = {"device": device}
    ellipses = []
    if device == "endotracheal tube":
        tip_cm = int(rng.integers(2, 7))
        tip = carina - tip_cm * 0.009
        lines = [([(0.0, 0.0), (0.002, tip)], 0.018 if not subtle else 0.012)]
        attributes["tip_cm_above_carina"] = tip_cm
    elif device == "central line":
        sign = -1.0 if rng.random() < 0.6 else 1.0
        attributes["side"] = "right" if sign < 0 else "left"
        tip_v = carina + rng.uniform(0.0, 0.12)
        lines = [([(sign * 0.33, an.apex + 0.02), (sign * 0.22, an.apex + 0.06), (sign * 0.06, an.apex + 0.09),
                   (-0.035, an.apex + 0.16), (-0.04, tip_v)], 0.011 if not subtle else 0.008)]
    else:
        sign = 1.0 if rng.random() < 0.8 else -1.0
        attributes["side"] = "left" if sign > 0 else "right"
        gx, gv = sign * rng.uniform(0.22, 0.3), an.apex + rng.uniform(0.04, 0.08)
        lines = [([(gx, gv), (sign * 0.12, gv + 0.04), (-0.03, an.apex + 0.2), (-0.05, an.heart_v),
                   (0.06, an.heart_v + 0.09)], 0.011 if not subtle else 0.008)]
        ellipses = [((gx, gv), 0.035, 0.025)]
        brightness *= 1.3
    mask = _draw_mask(geom, lines, ellipses)
    return Rendered("Support Devices", attributes, mask, add=brightness * mask)


def render_fracture(geom: Geometry, rng: np.random.Generator, subtle: bool) -> Rendered:
    """A cortical break (thin gap, slight step) across one posterior rib: hard on purpose."""
    an = geom.anatomy
    side, rib = str(rng.choice(SIDES)), int(rng.integers(4, 10))
    a_break = rng.uniform(0.55, 0.9) * an.half_width
    rib_v = an.rib_curve(a_break) + (rib - 1 + 0.25) * an.rib_spacing  # centre of that rib's band
    near = (np.abs(geom.a - a_break) < 0.025) & (np.abs(geom.v - rib_v) < 0.6 * an.rib_spacing)
    near &= geom.side_mask(side)
    gap = ramp((0.007 if subtle else 0.012) - np.abs(geom.a - a_break + 0.3 * (geom.v - rib_v)), 0.004)
    add = -0.12 * geom.ribs * gap * near
    return Rendered("Fracture", {"side": side, "rib": rib}, near, add=add)
