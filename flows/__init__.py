"""Prefect flows: one per pipeline stage, plus ``pipeline_flow`` that chains them.

Flows orchestrate; the computing lives in :mod:`pipeline`. Importing this package applies the
process environment the stack needs (see :mod:`pipeline.runtime`) before Prefect is imported.
"""

from pipeline.runtime import configure_environment

configure_environment()
