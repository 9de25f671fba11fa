"""The prepare stage's preview: an RGB composite, a SAR composite and the label map, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from pipeline.data.scene import SceneDescription

CLASS_COLOURS = ["#1f4e99", "#1b7837", "#e6c229", "#98df8a", "#d62728", "#a6761d", "#9467bd",
                 "#17becf", "#7f7f7f", "#ff7f0e", "#8c564b", "#e377c2"]


def stretch(image: np.ndarray) -> np.ndarray:
    """Per-band 2-98 percentile stretch to [0, 1], ``(bands, H, W)`` -> ``(H, W, bands)``."""
    out = np.empty(image.shape[1:] + image.shape[:1], dtype=np.float32)
    for i, band in enumerate(image):
        finite = band[np.isfinite(band)]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.nan_to_num(out)


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def scene_preview(scene_dir: Path, scene: SceneDescription, rasters: dict[str, np.ndarray],
                  out: Path, max_side: int = 256) -> None:
    """An RGB composite, a SAR composite and the label map side by side, as a PNG.

    Drawn from the feature rasters already in memory (``rasters``: per modality, and
    ``invalid``, black in every panel) taken every ``step`` pixels, and a decimated read of the
    labels: no second full read of the scene and no plotting library (PIL only).
    """
    from PIL import Image, ImageDraw

    height, width = rasters["invalid"].shape
    step = max(1, int(np.ceil(max(height, width) / max_side)))
    invalid = rasters["invalid"][::step, ::step]
    zoom = max(1, max_side // max(invalid.shape))  # small scenes are enlarged, pixels kept
    panels = []
    for name, modality in scene.modalities.items():
        image = np.where(invalid, np.nan, rasters[name][:, ::step, ::step])
        if modality.kind == "optical":
            idx = [modality.bands.index(b) if b in modality.bands else i
                   for i, b in enumerate(["B04", "B03", "B02"])][:image.shape[0]]
            rgb = stretch(image[idx])
            title = f"{modality.path}: RGB (B04, B03, B02)"
        else:
            second = image[min(1, len(image) - 1)]
            rgb = stretch(np.stack([image[0], second, image[0] - second]))
            title = f"{modality.path}: SAR ({'/'.join(modality.bands[:2])}, ratio) dB"
        if rgb.shape[-1] < 3:
            rgb = np.repeat(rgb[..., :1], 3, axis=-1)
        panels.append((title, (rgb * 255).astype(np.uint8)))
    with rasterio.open(scene_dir / scene.labels) as src:
        labels = src.read(1, out_shape=invalid.shape)
    codes = sorted(scene.classes)
    colours = [_hex_rgb(CLASS_COLOURS[i % len(CLASS_COLOURS)]) for i in range(len(codes))]
    label_rgb = np.full(labels.shape + (3,), 255, dtype=np.uint8)
    for code, colour in zip(codes, colours, strict=True):
        label_rgb[labels == code] = colour
    panels.append((f"{scene.labels}: classes", label_rgb))

    gap, top, legend = 8, 16, 150
    side_h, side_w = invalid.shape[0] * zoom, invalid.shape[1] * zoom
    canvas = Image.new("RGB", (len(panels) * (side_w + gap) + legend, side_h + top + gap),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, rgb) in enumerate(panels):
        x = i * (side_w + gap)
        panel = Image.fromarray(rgb).resize((side_w, side_h), Image.Resampling.NEAREST)
        canvas.paste(panel, (x, top))
        draw.text((x, 2), title, fill="black")
    x = len(panels) * (side_w + gap)
    for i, (code, colour) in enumerate(zip(codes, colours, strict=True)):
        y = top + 14 * i
        draw.rectangle((x, y, x + 10, y + 10), fill=colour)
        draw.text((x + 14, y), f"{code} {scene.classes[code]}", fill="black")
    canvas.save(out, format="PNG", compress_level=1)
