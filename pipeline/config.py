"""Typed view of ``params.yaml``.

``load_params`` is the only place that reads the file. Entry points call it once and pass the
typed sections down; library code never opens the YAML. Unknown keys are errors (with the nearest
valid key suggested), because a typo that silently falls back to a default wastes a training run.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypedDict

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ParamsError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticSceneParams(_Section):
    """The embedded synthetic two-modality scene (used when the user brings no rasters)."""

    seed: int = 42
    height: int = Field(256, ge=64, le=20000, description="rows of the scene, in pixels")
    width: int = Field(256, ge=64, le=20000, description="columns of the scene, in pixels")
    pixel_size_m: float = Field(10.0, gt=0, description="ground sampling distance")
    epsg: int = Field(32633, description="EPSG code of the projected CRS (UTM by default)")
    region_scale_px: float = Field(
        10.0, gt=0, description="spatial scale of land-cover regions; larger means bigger fields"
    )
    cloud_fraction: float = Field(
        0.3, ge=0, le=0.9, description="share of the optical image under cloud or cloud shadow"
    )


Resampling = Literal["nearest", "bilinear", "cubic", "average", "mode"]


class ModalityParams(_Section):
    """One modality of the user's scene: a multi-band raster or a folder of single-band ones."""

    path: str = Field(description="raster GDAL reads (GeoTIFF, JP2, VRT), or folder of one "
                      "raster per band (band name in the file name)")
    kind: Literal["optical", "sar"]
    bands: list[str] = Field(min_length=1, description="band names, in the file's band order")
    resampling: Resampling = Field(
        "bilinear", description="onto the reference grid (SAR is resampled in linear power)")
    nodata: float | None = Field(None, description="overrides the file's nodata value")
    units: Literal["linear", "db"] = Field(
        "linear", description="SAR: linear power, or decibels (converted to linear power)")

    @model_validator(mode="after")
    def _unique_bands(self) -> ModalityParams:
        if len(set(self.bands)) != len(self.bands):
            raise ValueError(f"band names must be unique, got {self.bands}")
        if self.units == "db" and self.kind != "sar":
            raise ValueError("units: db is for SAR modalities (kind: sar); optical values are "
                             "reflectance x 10000, remove units")
        return self


class SceneParams(_Section):
    """The user's own rasters. Every modality is aligned to the label raster's grid."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
                             description="the scene's name, when many scenes are listed "
                             "(its folder; default scene<k>, k from 0)")
    modalities: dict[str, ModalityParams] = Field(min_length=1)
    labels: str = Field(description="label raster (single band of integer class codes)")
    classes: dict[int, str] = Field(min_length=2, description="class code -> class name")
    ignore_codes: list[int] = Field(default_factory=lambda: [0],
                                    description="label codes that are not a class (no label)")


class BigEarthNetParams(_Section):
    """BigEarthNet-MM patch folders (Sentinel-1 + Sentinel-2), multi-label, 19 classes."""

    s1_root: str | None = Field(None, description="BigEarthNet-S1 folder; unset: the examples "
                                "shipped in the bigearthnet-common package")
    s2_root: str | None = Field(None, description="BigEarthNet-S2 folder (unset with s1_root)")
    s2_bands: list[str] = Field(
        default_factory=lambda: ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11",
                                 "B12"],
        min_length=1, description="S2 bands, all resampled to size x size")
    size: int = Field(120, ge=8, le=480, description="patch side after resampling, in pixels")
    split: Literal["official", "random"] = Field(
        "official", description="official train/val/test lists, or a seeded random split")

    @model_validator(mode="after")
    def _both_roots(self) -> BigEarthNetParams:
        if (self.s1_root is None) != (self.s2_root is None):
            raise ValueError("set both s1_root and s2_root, or neither (package examples)")
        return self


class IngestParams(_Section):
    """Where the modalities come from."""

    source: Literal["synthetic", "scene", "bigearthnet"] = "synthetic"
    synthetic: SyntheticSceneParams = SyntheticSceneParams()
    scene: SceneParams | list[SceneParams] | None = Field(
        None, description="one scene, or a list of scenes (same modalities, bands and classes)")
    bigearthnet: BigEarthNetParams = BigEarthNetParams()

    @model_validator(mode="after")
    def _scene_given(self) -> IngestParams:
        if self.source == "scene" and self.scene is None:
            raise ValueError("source 'scene' needs an ingest.scene section (modalities, labels, "
                             "classes)")
        if isinstance(self.scene, list):
            check_scenes_agree(self.scene)
        return self


def scene_names(scenes: list[SceneParams]) -> list[str]:
    """The name of each scene of a list: its ``name``, or ``scene<k>``."""
    return [s.name or f"scene{k}" for k, s in enumerate(scenes)]


def check_scenes_agree(scenes: list[SceneParams]) -> None:
    """Many scenes: at least one, unique names, and the first scene's modalities, bands, classes.

    Raises:
        ValueError: naming the scene (``ingest.scene[k]``, its name) and the field that differs.
    """
    if not scenes:
        raise ValueError("ingest.scene is an empty list: list at least one scene")
    names = scene_names(scenes)
    for name in {n for n in names if names.count(n) > 1}:
        raise ValueError(f"scene name {name!r} is used by several scenes of ingest.scene: give "
                         "each scene its own name")
    first = scenes[0]
    for k, scene in enumerate(scenes[1:], 1):
        where = f"ingest.scene[{k}] (scene {names[k]!r})"
        if list(scene.modalities) != list(first.modalities):
            raise ValueError(f"{where}: modalities {list(scene.modalities)} differ from scene "
                             f"{names[0]!r}'s {list(first.modalities)}: every scene needs the "
                             "same modalities, in the same order")
        for modality, params in scene.modalities.items():
            theirs = first.modalities[modality]
            if (params.kind, params.bands) != (theirs.kind, theirs.bands):
                raise ValueError(f"{where}: modalities.{modality} has {params.kind} bands "
                                 f"{params.bands}, scene {names[0]!r} has {theirs.kind} bands "
                                 f"{theirs.bands}: every scene needs the same bands, in the "
                                 "same order")
        for field in ("classes", "ignore_codes"):
            if getattr(scene, field) != getattr(first, field):
                raise ValueError(f"{where}: {field} {getattr(scene, field)} differ from scene "
                                 f"{names[0]!r}'s {getattr(first, field)}: use one class map "
                                 "for every scene")


class SplitFractions(_Section):
    """Fractions of spatial blocks assigned to each split."""

    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must equal 1, got {total:g}")
        return self


class PrepareParams(_Section):
    """How patches are cut from the scene and split."""

    patch_size: int = Field(9, ge=3, le=255, description="side of a square patch, odd")
    stride: int = Field(3, ge=1, description="distance between patch centres, in pixels")
    block_size: int = Field(32, ge=8, description="side of the spatial blocks of the split")
    split: SplitFractions = SplitFractions()
    seed: int = 0
    label: Literal["centre", "majority"] = Field(
        "centre", description="a patch's class: its centre pixel's, or the patch's majority")
    max_nodata_fraction: float = Field(
        0.1, ge=0, le=1, description="patches with more nodata pixels than this are dropped")
    min_class_samples: int = Field(
        3, ge=1, description="a class with fewer patches than this cannot be split: error")
    window_size: int = Field(
        64, ge=16, le=8192, description="side of the scene windows read by one Spark task")
    split_by: Literal["block", "scene"] = Field(
        "block", description="many scenes: split spatial blocks within each scene, or whole "
        "scenes (each scene in one split; at least 3 scenes)")

    @model_validator(mode="after")
    def _odd_patch(self) -> PrepareParams:
        if self.patch_size % 2 == 0:
            raise ValueError(
                f"patch_size must be odd so the labelled pixel is the centre, got {self.patch_size}"
            )
        if self.block_size < self.patch_size:
            raise ValueError(
                f"block_size ({self.block_size}) must be at least patch_size ({self.patch_size})"
            )
        return self


class ModelShape(TypedDict):
    """The shape keys of ``ModelConfig`` that ``model.size`` sets."""

    branch_width: int
    branch_depth: int
    fusion_width: int
    downsample_every: int


ModelSize = Literal["tiny", "small", "large"]
MODEL_SIZES: dict[ModelSize, dict[str, int]] = {  # model.size -> the shape keys it sets
    "tiny": {"branch_width": 16, "branch_depth": 2, "fusion_width": 64, "downsample_every": 0},
    "small": {"branch_width": 32, "branch_depth": 4, "fusion_width": 128, "downsample_every": 2},
    "large": {"branch_width": 64, "branch_depth": 6, "fusion_width": 512, "downsample_every": 2},
}


class ModelParams(_Section):
    """Size of the multimodal CNN: a named ``size``, whose shape keys a key set here overrides."""

    size: ModelSize = Field(
        "tiny", description="tiny (the default, for make run) | small | large (>= 10 MB)")
    branch_width: int = Field(16, ge=1, le=1024, description="channels of a branch's first block")
    branch_depth: int = Field(2, ge=1, le=16, description="conv blocks per modality branch")
    fusion_width: int = Field(64, ge=1, le=8192, description="width of the fused hidden layer")
    downsample_every: int = Field(
        0, ge=0, le=16, description="a 2x2 max-pool after every k-th block, then twice the "
                                    "width (0: none)")

    @model_validator(mode="before")
    @classmethod
    def _from_size(cls, data: Any) -> Any:
        if isinstance(data, dict):
            size = data.get("size", "tiny")
            return MODEL_SIZES.get(size, {}) | data
        return data

    def shape(self) -> ModelShape:
        """The network's shape keys (``ModelConfig``'s), as this section resolves them."""
        return ModelShape(branch_width=self.branch_width, branch_depth=self.branch_depth,
                          fusion_width=self.fusion_width, downsample_every=self.downsample_every)


SchemeName = Literal["data_parallel", "branch_parallel", "pipeline_parallel", "hybrid"]
ALL_SCHEMES: tuple[SchemeName, ...] = (
    "data_parallel", "branch_parallel", "pipeline_parallel", "hybrid")


class DataParallelParams(_Section):
    """Knobs of the data-parallel scheme (they change its gradient traffic)."""

    gradient_compression: Literal["none", "fp16", "bf16", "powersgd"] = Field(
        "none", description="DDP communication hook for the gradient all-reduce")
    powersgd_rank: int = Field(2, ge=1, le=64, description="rank of PowerSGD's approximation")
    sync_every: int = Field(1, ge=1, le=10000,
                            description="1: synchronous SGD; k > 1: local SGD, parameters "
                                        "averaged every k steps")
    bucket_cap_mb: float = Field(
        25.0, gt=0, le=1024, description="DDP gradient bucket size in MB: each bucket is one "
                                         "all-reduce, sent while backward goes on")


class ModelParallelParams(_Section):
    """Knobs of the model-parallel schemes (branch_parallel, pipeline_parallel, hybrid)."""

    micro_batches: int = Field(1, ge=1, description="micro-batches per step (GPipe schedule)")
    activation_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="precision of activations and their gradients on the wire")
    head_placement: Literal["shared", "own"] = Field(
        "shared", description="fusion head on its own worker, or with the last branch")
    pipeline_stages: int = Field(2, ge=2, description="pipeline_parallel: sequential stages")
    replicas: int = Field(2, ge=1, le=256, description="hybrid: copies of the branch layout")


class TrainParams(_Section):
    """Optimisation and parallelisation."""

    scheme: SchemeName = Field("data_parallel", description="scheme of `python -m flows.train`")
    compare: list[SchemeName] = Field(
        default_factory=lambda: list(ALL_SCHEMES),
        description="schemes the pipeline trains and compares (one DVC stage each)")
    workers: int = Field(2, ge=1, le=1024, description="data_parallel: replicas (Spark tasks)")
    batch_size: int = Field(64, ge=1, description="global batch size, split across workers")
    epochs: int = Field(8, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    seed: int = 0
    timeout_s: int = Field(1800, ge=10, description="training is aborted after this long")
    checkpoint_every: int = Field(
        50, ge=0, description="optimiser steps between checkpoints (0: none); a rerun or a "
                              "retry resumes from the last one")
    timeline_interval_s: float = Field(
        1.0, ge=0, le=3600, description="seconds between each worker's resource samples (CPU, "
                                        "RSS, bytes/s), logged as MLflow timelines; 0: none")
    retries: int = Field(1, ge=0, le=10,
                         description="Prefect retries of a failed training (resume from the "
                                     "last checkpoint)")
    data_parallel: DataParallelParams = DataParallelParams()
    model_parallel: ModelParallelParams = ModelParallelParams()

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        used = {self.scheme, *self.compare}
        if not self.compare:
            raise ValueError("compare must list at least one scheme")
        if len(set(self.compare)) != len(self.compare):
            raise ValueError(f"compare lists a scheme twice: {self.compare}")
        if "data_parallel" in used and self.batch_size % self.workers != 0:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of workers ({self.workers}) "
                "so every data-parallel worker gets an equal share of each global batch")
        per_copy = self.batch_size
        if "hybrid" in used:
            replicas = self.model_parallel.replicas
            if self.batch_size % replicas != 0:
                raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of "
                                 f"model_parallel.replicas ({replicas}) for the hybrid scheme")
            per_copy = self.batch_size // replicas
        if self.model_parallel.micro_batches > per_copy:
            raise ValueError(
                f"model_parallel.micro_batches ({self.model_parallel.micro_batches}) is larger "
                f"than the batch each model copy sees ({per_copy}); lower micro_batches")
        return self


SPARK_MASTER_FORMS = ("local", "local[N]", "local[*]", "local-cluster[N,cores,memoryMB]",
                      "spark://host:port", "yarn", "k8s://https://host:port")
_SPARK_MASTER = re.compile(
    r"local(\[(\d+|\*)(,\d+)?\])?"              # local, local[N], local[*], local[N,F]
    r"|local-cluster\[\d+,\d+,\d+\]"              # local-cluster[workers,cores,memoryMB]
    r"|spark://[^\s/:,]+:\d+(,[^\s/:,]+:\d+)*"      # standalone (several masters: HA)
    r"|yarn"
    r"|k8s://\S+")


class SparkParams(_Section):
    """The Spark application training runs in. Moving to a cluster means changing ``master``."""

    master: str = "local[4]"
    app_name: str = "landcover-mlops"
    conf: dict[str, str] = Field(default_factory=dict, description="extra Spark settings")

    @field_validator("master")
    @classmethod
    def _known_master(cls, master: str) -> str:
        if not _SPARK_MASTER.fullmatch(master):
            raise ValueError(f"not a Spark master URL; use one of {', '.join(SPARK_MASTER_FORMS)}")
        return master


class ClusterParams(_Section):
    """The standalone Spark cluster ``make cluster-up`` starts on this machine."""

    workers: int = Field(2, ge=1, le=240, description="Spark workers (separate JVMs)")
    cores: int = Field(2, ge=1, le=64, description="task slots of each worker")
    memory: str = Field("2g", pattern=r"^\d+[kmgt]$", description="memory of each worker")
    port: int = Field(7077, ge=0, le=65535, description="the master's port (0: any free one)")
    network: Literal["loopback", "emulated"] = Field(
        "loopback", description="loopback: all on 127.0.0.1; emulated: a network namespace "
                                "and rate-limited links per worker (needs root)")
    link_rate: str = Field("1gbit", description="emulated: every worker's link rate, both "
                                                "directions (tc units: 100mbit, 1gbit, 10gbit)")

    @model_validator(mode="after")
    def _valid_rate(self) -> ClusterParams:
        from pipeline.emulated_network import parse_rate

        parse_rate(self.link_rate)
        return self


class PlanParams(_Section):
    """The cost model (``make plan``, and the predictions the compare stage logs)."""

    link_rate: str | None = Field(
        None, description="each worker's link rate (tc units: 100mbit, 1gbit); null: "
                          "cluster.link_rate when cluster.network is emulated, else unshaped")
    latency_us: float | None = Field(
        None, ge=0, description="a message's fixed cost; null: measured between two local "
                                "gloo processes")
    shared_cores: int | None = Field(
        None, ge=0, description="cores all workers share (one machine); null: this machine's "
                                "when Spark runs here; 0: every worker has cores of its own")
    worker_memory: str | None = Field(
        None, pattern=r"^\d+[kmgt]$", description="memory a worker may use (e.g. 2g); null: "
                                                  "spark.executor.memory, else cluster.memory")
    sweep: list[str] = Field(
        default_factory=lambda: ["10mbit", "100mbit", "1gbit", "10gbit"],
        description="link rates of `make plan SWEEP=1`")

    @model_validator(mode="after")
    def _valid_rates(self) -> PlanParams:
        from pipeline.emulated_network import parse_rate

        for rate in [self.link_rate, *self.sweep]:
            if rate is not None:
                parse_rate(rate)
        return self


class TrackingParams(_Section):
    """Where MLflow records runs: one experiment per dataset (``{source}``: ``ingest.source``)."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = Field("landcover-{source}",
                            description="experiment name; {source} is replaced by ingest.source")

    def experiment_name(self, source: str) -> str:
        """The experiment of a pipeline run on data from ``source``."""
        return self.experiment.replace("{source}", source)


class CompareParams(_Section):
    """How the compare stage ranks the schemes and which model it registers."""

    metric: str = Field("val_overall_accuracy",
                        description="MLflow metric of the scheme runs that picks the best model "
                                    "(a validation-split metric, val_*)")
    mode: Literal["max", "min"] = "max"
    registered_model: str = Field("landcover-classifier",
                                  description="model registry name of the best model")
    alias: str = Field("champion", pattern=r"^[A-Za-z][\w-]*$",
                       description="alias the best model version gets")

    @field_validator("metric")
    @classmethod
    def _not_on_test(cls, metric: str) -> str:
        if metric.startswith("test_"):
            raise ValueError(
                f"{metric!r} would choose the model on the test split, whose figures are then "
                "optimistic (the choice is fitted to them); the test split is only reported. "
                f"Select on the validation split: {'val_' + metric.removeprefix('test_')!r}")
        return metric


class MapParams(_Section):
    """The land-cover map of the scene (single-label scenes only)."""

    stride: int = Field(1, ge=1, le=64, description="predict every k-th pixel (others nodata)")
    window_size: int = Field(64, ge=8, description="scene windows per Spark task (plus halo)")
    batch_size: int = Field(2048, ge=1, description="patches per forward pass in a window")


class InferenceParams(_Section):
    """How inference is timed, per scheme, the way the scheme deploys."""

    batch_size: int = Field(256, ge=1, description="samples per forward pass (and per batch)")
    samples: int = Field(16384, ge=1, description="samples per timed pass (test split, tiled)")
    repeats: int = Field(3, ge=1, description="timed passes after the warm-up (the spread)")
    warmup: int = Field(1, ge=1, description="untimed passes first (JIT, caches, workers)")
    timeout_s: int = Field(600, ge=10, description="a hung inference job is stopped after this")


class EvaluateParams(_Section):
    """How predictions are scored, mapped and timed."""

    threshold: float = Field(0.5, gt=0, lt=1,
                             description="multi-label: a class is predicted when sigmoid > this")
    bootstrap_resamples: int = Field(
        1000, ge=100, le=100_000,
        description="resamples of the test blocks for the 95 % intervals of the metrics")
    map: MapParams = MapParams()
    inference: InferenceParams = InferenceParams()


class Params(_Section):
    """Every parameter of the pipeline, grouped by stage as in ``params.yaml``."""

    ingest: IngestParams = IngestParams()
    prepare: PrepareParams = PrepareParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    spark: SparkParams = SparkParams()
    cluster: ClusterParams = ClusterParams()
    plan: PlanParams = PlanParams()
    tracking: TrackingParams = TrackingParams()
    evaluate: EvaluateParams = EvaluateParams()
    compare: CompareParams = CompareParams()

    @model_validator(mode="after")
    def _stages_fit_the_model(self) -> Params:
        layers = self.model.branch_depth + 2
        if self.train.model_parallel.pipeline_stages > layers:
            raise ValueError(
                f"train.model_parallel.pipeline_stages "
                f"({self.train.model_parallel.pipeline_stages})"
                f" exceeds the model's {layers} layers (model.branch_depth + 2)")
        return self

    def for_scheme(self, scheme: str | None) -> Params:
        """These parameters with ``train.scheme`` set to ``scheme`` (``None``: unchanged)."""
        if scheme is None:
            return self
        if scheme not in ALL_SCHEMES:
            raise ParamsError("<command line>", "--scheme", f"unknown scheme {scheme!r}",
                              f"use one of {list(ALL_SCHEMES)}")
        return self.model_copy(update={"train": self.train.model_copy(update={"scheme": scheme})})

    def flat(self) -> dict[str, Any]:
        """All parameters as ``{"train.batch_size": 64, ...}``, for MLflow."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), inner)
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for index, inner in enumerate(value):  # many scenes: ingest.scene.0.labels
                    walk(f"{prefix}.{index}", inner)
            else:
                out[prefix] = value

        walk("", self.model_dump())
        return out


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate ``params.yaml``.

    Raises:
        ParamsError: the file is missing or not YAML, a key is unknown, or a value is invalid.
            The message names the file, the field and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(
            path, "<file>", "the parameters file does not exist",
            "run from the project root or pass --params with the path to params.yaml",
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(path, "<file>", f"not valid YAML ({exc})", "fix the YAML syntax") from exc
    if raw is None or raw == {}:
        raise ParamsError(path, "<file>", "the parameters file is empty, so every stage would "
                          "run on built-in defaults", "restore it (`git checkout params.yaml`), "
                          "or write at least the sections you mean to set")
    if not isinstance(raw, dict):
        raise ParamsError(path, "<file>", "the top level must be a mapping of sections",
                          f"use sections {sorted(Params.model_fields)}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise _params_error(path, exc) from None


def _params_error(path: Path, exc: ValidationError) -> ParamsError:
    """Turn pydantic's first error into one message that names the field and the fix."""
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"] if not _union_tag(str(part))]
    field = ".".join(loc) or "<file>"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return ParamsError(path, field, "unknown key",
                           f"{hint}valid keys here are {sorted(valid)}")
    value = err.get("input")
    fix = "change the value"
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        fix = f"use one of {ctx['expected']}"
    return ParamsError(path, field, f"{err['msg']} (got {value!r})", fix)


def _union_tag(part: str) -> bool:
    """Whether ``part`` of an error's location is pydantic's name of a union's member.

    For ``scene: SceneParams | list[SceneParams]`` pydantic locates an error at
    ``ingest.scene.SceneParams.modalities...`` or ``ingest.scene.list[SceneParams].1...``;
    the user wrote neither name.
    """
    return part.removeprefix("list[").removesuffix("]") in _MODEL_NAMES


def _valid_keys(loc: list[str]) -> list[str]:
    model: Any = Params
    parts = iter(loc)
    for part in parts:
        if part.isdigit():  # an item of a list of sections (ingest.scene.1)
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = _unwrap_optional(field.annotation)
        if typing.get_origin(annotation) is dict:  # e.g. modalities: {name: ModalityParams}
            annotation = typing.get_args(annotation)[1]
            next(parts, None)  # skip the user's key
        elif isinstance(annotation, types.UnionType):  # e.g. SceneParams | list[SceneParams]
            annotation = next((a for a in typing.get_args(annotation)
                               if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def write_overrides(path: Path | str, overrides: dict[str, Any]) -> Params:
    """Set dotted keys of the parameters file (``{"train.epochs": 1}``) like ``dvc exp run -S``.

    Comments and order are kept (round-trip YAML). The result is validated before anything is
    written, so a bad override leaves the file unchanged. Returns the new parameters.

    Raises:
        ParamsError: a key is unknown or a value invalid (nothing written).
    """
    from io import StringIO

    from ruamel.yaml import YAML

    path = Path(path)
    load_params(path)  # the file itself must be valid first
    yaml_rt = YAML()  # round-trip: keeps comments
    document = yaml_rt.load(path.read_text())
    for dotted, value in overrides.items():
        node = document
        *parents, last = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ParamsError(path, dotted, "unknown key",
                                  f"valid keys here are {sorted(node) if node else []}")
            node = node[part]
        node[last] = value
    buffer = StringIO()
    yaml_rt.dump(document, buffer)
    try:
        params = Params.model_validate(yaml.safe_load(buffer.getvalue()) or {})
    except ValidationError as exc:
        raise _params_error(path, exc) from None
    path.write_text(buffer.getvalue())
    return params


_MODEL_NAMES = {name for name, value in list(globals().items())
                if isinstance(value, type) and issubclass(value, BaseModel)}
