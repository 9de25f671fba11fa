"""Model-parallel inference on real Spark barrier tasks: layouts, counted activations."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.inference.job import InferJob
from pipeline.inference.model_parallel import time_model_parallel
from pipeline.model import predict
from pipeline.model_store import load_model
from pipeline.training.job import ParallelSettings
from pipeline.training.layout import activation_shapes, cross_rank_edges, layout_for

pytestmark = pytest.mark.slow

SAMPLES, BATCH = 300, 64


LAYOUTS = {  # name: (settings, workers)
    "branch_parallel_own_head": (ParallelSettings(scheme="branch_parallel", head_placement="own"),
                                 3),
    "pipeline_parallel_3_stages": (ParallelSettings(scheme="pipeline_parallel",
                                                    pipeline_stages=3), 3),
    "hybrid_2_replicas": (ParallelSettings(scheme="hybrid", replicas=2), 4),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_on_spark_predicts_what_one_process_predicts_and_counts_activations(
        name: str, spark: object, model_dir: Path, prepared_dir: Path) -> None:
    parallel, workers = LAYOUTS[name]
    job = InferJob(model_dir=str(model_dir), data_dir=str(prepared_dir), parallel=parallel,
                   samples=SAMPLES, batch_size=BATCH, repeats=2, warmup=1, timeout_s=300)
    result = time_model_parallel(spark, job)

    model, _ = load_model(model_dir)
    inputs = PreparedDataset.open(prepared_dir).split("test").inputs
    index = torch.arange(SAMPLES) % next(iter(inputs.values())).shape[0]
    assert torch.equal(result.decisions, predict(model, {k: v[index] for k, v in inputs.items()}))

    layout = layout_for(model.config, parallel, model)
    assert result.workers == layout.world_size == workers
    shapes = activation_shapes(model, PreparedDataset.open(prepared_dir).manifest["patch_size"])
    per_sample = sum(int(np.prod(shapes[e.key])) * 4 for e in cross_rank_edges(model, layout))
    assert result.bytes_moved == per_sample * SAMPLES  # every crossing activation, once
    assert len(result.pass_seconds) == 2
    assert len(result.batch_seconds) == 2 * -(-SAMPLES // BATCH)
    # a batch's latency, submission to decisions, spans the workers inside one timed pass
    assert all(0 < s <= max(result.pass_seconds) for s in result.batch_seconds)
    assert result.setup_s > 0
