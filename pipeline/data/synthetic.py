"""A deterministic synthetic Sentinel-2 + Sentinel-1 scene, written as real GeoTIFFs.

Land cover comes in spatially coherent regions (smoothed random fields, arg-maxed), each class has a
Sentinel-2-like reflectance signature and a Sentinel-1-like backscatter signature in linear power,
with in-class variability and multiplicative speckle. Some classes are near-twins in one modality
and distinct in the other, and clouds with their shadows hide part of the optical image (SAR sees
through them), so neither modality alone is enough: the two complement each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from scipy.ndimage import gaussian_filter

from pipeline.config import SyntheticSceneParams
from pipeline.data.scene import Modality, SceneDescription
from pipeline.io import atomic_path

CLASSES = {1: "water", 2: "forest", 3: "cropland", 4: "grassland", 5: "urban", 6: "bare_soil"}
OPTICAL_BANDS = ["B02", "B03", "B04", "B08"]
SAR_BANDS = ["VV", "VH"]

# Mean surface reflectance per class for B02, B03, B04, B08.
_REFLECTANCE = np.array([
    [0.060, 0.050, 0.030, 0.020],  # water
    [0.030, 0.050, 0.030, 0.300],  # forest
    [0.050, 0.080, 0.060, 0.330],  # cropland (optically close to grassland)
    [0.050, 0.080, 0.060, 0.290],  # grassland
    [0.120, 0.120, 0.130, 0.180],  # urban (optically close to bare soil)
    [0.140, 0.140, 0.160, 0.200],  # bare soil
])
# Mean backscatter (linear power) per class for VV, VH. Forest and grassland (volume scattering)
# are near-twins in SAR, and so are cropland and bare soil (rough surfaces): optical separates them.
_BACKSCATTER = np.array([
    [0.005, 0.001],   # water
    [0.100, 0.025],   # forest
    [0.035, 0.0050],  # cropland
    [0.096, 0.024],   # grassland
    [0.500, 0.060],   # urban
    [0.034, 0.0048],  # bare soil
])
_SPECKLE_LOOKS = 4.0


def land_cover(params: SyntheticSceneParams, rng: np.random.Generator) -> np.ndarray:
    """Class codes (1..6) in coherent regions, shape ``(height, width)``."""
    fields = rng.standard_normal((len(CLASSES), params.height, params.width))
    smooth = np.stack([gaussian_filter(f, params.region_scale_px, mode="wrap") for f in fields])
    codes: np.ndarray = (np.argmax(smooth, axis=0) + 1).astype(np.uint8)
    return codes


def _within_class_variation(shape: tuple[int, int], rng: np.random.Generator,
                            scale_px: float, amplitude: float) -> np.ndarray:
    """A smooth multiplicative field around 1 (e.g. crop vigour, soil moisture)."""
    field = gaussian_filter(rng.standard_normal(shape), scale_px)
    field /= field.std() + 1e-12
    around_one: np.ndarray = 1.0 + amplitude * field
    return around_one


def optical_image(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sentinel-2-like reflectance x 10000 as uint16, shape ``(4, H, W)``."""
    mean = _REFLECTANCE[labels - 1].transpose(2, 0, 1)
    variation = _within_class_variation(labels.shape, rng, 4.0, 0.08)
    noise = 1.0 + 0.05 * rng.standard_normal(mean.shape)
    reflectance = np.clip(mean * variation * noise, 0.0001, 1.0)
    scaled: np.ndarray = np.round(reflectance * 10000).astype(np.uint16)
    return scaled


def sar_image(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sentinel-1-like backscatter in linear power with speckle, float32, shape ``(2, H, W)``."""
    mean = _BACKSCATTER[labels - 1].transpose(2, 0, 1)
    variation = _within_class_variation(labels.shape, rng, 6.0, 0.15)
    speckle = rng.gamma(_SPECKLE_LOOKS, 1.0 / _SPECKLE_LOOKS, size=mean.shape)
    backscatter: np.ndarray = (mean * np.clip(variation, 0.2, None) * speckle).astype(np.float32)
    return backscatter


def cloud_cover(shape: tuple[int, int], fraction: float, rng: np.random.Generator,
                scale_px: float = 12.0, shadow_offset: tuple[int, int] = (7, 9)
                ) -> tuple[np.ndarray, np.ndarray]:
    """Cloud opacity and shadow strength in [0, 1], shape ``(H, W)`` each.

    About ``fraction`` of the scene is under cloud (two thirds) or shadow (one third): cumulus-like
    blobs of a smoothed random field, with soft edges; the shadow is the cloud shifted by
    ``shadow_offset`` pixels (sun elevation), where it is not itself under cloud.
    """
    if fraction <= 0:
        return np.zeros(shape), np.zeros(shape)
    field = gaussian_filter(rng.standard_normal(shape), scale_px, mode="wrap")
    field /= field.std() + 1e-12
    cloud_share = fraction * 2 / 3
    core = np.quantile(field, 1 - cloud_share)
    soft = 0.25
    cloud = np.clip((field - core) / soft + 0.5, 0.0, 1.0)
    shadow = np.roll(cloud, shadow_offset, axis=(0, 1)) * (1.0 - cloud)
    return cloud, shadow


def add_clouds(reflectance: np.ndarray, cloud: np.ndarray, shadow: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Blend thick, bright clouds and dark shadows into reflectance ``(bands, H, W)``."""
    top = 0.45 + 0.15 * gaussian_filter(rng.standard_normal(cloud.shape), 3.0)
    cloudy = (1 - cloud) * reflectance + cloud * np.clip(top, 0.25, 0.8)[None]
    blended: np.ndarray = cloudy * (1.0 - 0.75 * shadow)[None]
    return blended


def write_synthetic_scene(params: SyntheticSceneParams, out_dir: Path) -> SceneDescription:
    """Generate the scene and write it atomically to ``out_dir``.

    Writes ``optical.tif`` (uint16, 4 bands), ``sar.tif`` (float32, VV/VH linear power),
    ``labels.tif`` (uint8 class codes, 0 = no label) and ``scene.json``.
    """
    rng = np.random.default_rng(params.seed)
    labels = land_cover(params, rng)
    optical = optical_image(labels, rng)
    sar = sar_image(labels, rng)
    cloud, shadow = cloud_cover(labels.shape, params.cloud_fraction, rng)
    optical = np.round(np.clip(add_clouds(optical / 10000.0, cloud, shadow, rng), 0.0001, 1.0)
                       * 10000).astype(np.uint16)

    profile = {
        "driver": "GTiff",
        "height": params.height,
        "width": params.width,
        "crs": CRS.from_epsg(params.epsg),
        "transform": from_origin(500_000.0, 4_500_000.0, params.pixel_size_m, params.pixel_size_m),
        "tiled": True,
        "blockxsize": 256 if params.width >= 256 else 16 * (params.width // 16),
        "blockysize": 256 if params.height >= 256 else 16 * (params.height // 16),
        "compress": "deflate",
    }
    description = SceneDescription(
        modalities={
            "optical": Modality(path="optical.tif", kind="optical", bands=OPTICAL_BANDS),
            "sar": Modality(path="sar.tif", kind="sar", bands=SAR_BANDS),
        },
        labels="labels.tif",
        classes=dict(CLASSES),
        ignore_codes=[0],
        source="synthetic",
    )
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        _write(tmp / "optical.tif", optical, profile, OPTICAL_BANDS, nodata=0)
        _write(tmp / "sar.tif", sar, profile, SAR_BANDS, nodata=None)
        _write(tmp / "labels.tif", labels[None], profile, ["class_code"], nodata=0)
        description.save(tmp)
    return description


def _write(path: Path, data: np.ndarray, profile: dict[str, Any], bands: list[str],
           nodata: float | None) -> None:
    with rasterio.open(path, "w", count=data.shape[0], dtype=data.dtype, nodata=nodata,
                       **profile) as dst:
        dst.write(data)
        for index, name in enumerate(bands, start=1):
            dst.set_band_description(index, name)
