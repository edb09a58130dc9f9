"""What the pipeline's stages do not cost per request (issue 22): structural, not timed."""

from __future__ import annotations

import inspect

from gateway.pipeline.report import Reporter


def test_serving_is_no_async_generator_context() -> None:
    # @asynccontextmanager: an async generator and contextlib's wrappers per request
    assert not inspect.isasyncgenfunction(inspect.unwrap(Reporter.serving))
    assert inspect.isfunction(Reporter.serving)
    assert not hasattr(Reporter.serving, "__wrapped__")
