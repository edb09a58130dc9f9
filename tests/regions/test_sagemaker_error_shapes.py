"""A SageMaker error body is any JSON: odd member types still give a BackendError."""

from __future__ import annotations

import orjson
import pytest

from regions.errors import FailureClass
from regions.sagemaker_errors import response_error


@pytest.mark.parametrize(
    "error_code", [["INFERENCE_COMPONENT_NAME_MISSING"], {"a": 1}, 7, None, "OTHER"]
)
def test_a_validation_error_code_of_any_shape_is_classed(error_code: object) -> None:
    body = orjson.dumps({"__type": "ValidationError", "message": "bad", "ErrorCode": error_code})
    error = response_error(400, {}, body)
    assert error.failure is FailureClass.CLIENT and error.status == 400


def test_the_misconfigured_code_is_the_backends_fault() -> None:
    body = orjson.dumps(
        {
            "__type": "ValidationError",
            "message": "x",
            "ErrorCode": "INFERENCE_COMPONENT_NAME_MISSING",
        }
    )
    assert response_error(400, {}, body).failure is FailureClass.SERVER
