"""Inference: timed the way each scheme deploys, and the land-cover map of a scene.

- :mod:`pipeline.inference.timing`: the figures every deployment reports, under the same names.
- :mod:`pipeline.inference.single`: the single-process PyTorch baseline.
- :mod:`pipeline.inference.data_parallel`: the model broadcast to Spark executors, applied to the
  partitions of an RDD of shard ranges with ``mapPartitions``.
- :mod:`pipeline.inference.model_parallel`: the branch-, pipeline- and hybrid-parallel layouts on
  Spark barrier tasks, activations passed on by counted point-to-point sends.
- :mod:`pipeline.inference.landcover_map`: a classified GeoTIFF of the scene, window by window.
"""
