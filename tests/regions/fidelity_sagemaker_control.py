"""What moto cannot answer about SageMaker inference components, answered honestly.

moto 5.2 does not implement ``ListInferenceComponents`` (NotImplementedError)
nor tags on components. These ``before-call`` hooks (the event botocore's own
``Stubber`` uses) answer with the raw JSON SageMaker would send, parsed by
botocore's json parser against the operation's real output shape, so shapes,
timestamps and the paginator's ``NextToken`` are botocore's. One component per
page exercises pagination. Everything else still goes to moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore import handlers
from botocore.awsrequest import AWSResponse
from botocore.parsers import create_parser

REGION = "us-east-1"
ACCOUNT = "123456789012"

COMPONENTS: dict[str, list[dict[str, Any]]] = {}
"""Endpoint name → its components (``InferenceComponentSummary`` plus ``Tags``)."""
DENIED: set[str] = set()
"""Component ARNs whose ``ListTags`` the role may not call (IAM's AccessDeniedException)."""


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def component(endpoint: str, name: str, tags: dict[str, str], status: str = "InService") -> None:
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:inference-component/{name}"
    COMPONENTS.setdefault(endpoint, []).append(
        {
            "CreationTime": 1_700_000_000,
            "LastModifiedTime": 1_700_000_000,
            "InferenceComponentArn": arn,
            "InferenceComponentName": name,
            "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{endpoint}",
            "EndpointName": endpoint,
            "VariantName": "AllTraffic",
            "InferenceComponentStatus": status,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
    )


def answer(model: Any, payload: dict[str, Any], status: int = 200) -> tuple[AWSResponse, Any]:
    """What botocore's ``_make_api_call`` gets from a ``before-call`` hook."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "r-ic"}
    raw = {"status_code": status, "headers": headers, "body": body}
    parsed = create_parser("json").parse(raw, model.output_shape)
    return AWSResponse("https://api.sagemaker", status, headers, _Body(body)), parsed


def list_components(model: Any, params: dict[str, Any], **_: Any) -> Any:
    asked = json.loads(params["body"] or b"{}")
    listed = COMPONENTS.get(asked.get("EndpointNameEquals", ""), [])
    start = int(asked.get("NextToken") or 0)
    page = [{k: v for k, v in c.items() if k != "Tags"} for c in listed[start : start + 1]]
    payload: dict[str, Any] = {"InferenceComponents": page}
    if start + 1 < len(listed):
        payload["NextToken"] = str(start + 1)
    return answer(model, payload)


def component_tags(model: Any, params: dict[str, Any], **_: Any) -> Any:
    arn = json.loads(params["body"] or b"{}").get("ResourceArn", "")
    if ":inference-component/" not in arn:
        return None  # moto answers for endpoints
    if arn in DENIED:
        return answer(model, {"__type": "AccessDeniedException", "Message": "not authorized"}, 400)
    tags: object = next(
        (c["Tags"] for cs in COMPONENTS.values() for c in cs if c["InferenceComponentArn"] == arn),
        [],
    )
    return answer(model, {"Tags": tags})


LIST_EVENT = "before-call.sagemaker.ListInferenceComponents"
TAGS_EVENT = "before-call.sagemaker.ListTags"


def install(events: Any) -> None:
    """Answer on one botocore session's (or client's) event emitter."""
    events.register_first(LIST_EVENT, list_components)
    events.register_first(TAGS_EVENT, component_tags)


@contextmanager
def everywhere() -> Iterator[None]:
    """Answer for every botocore session created meanwhile (as moto itself
    hooks in: ``botocore.handlers.BUILTIN_HANDLERS``)."""
    added = [
        (LIST_EVENT, list_components, handlers.REGISTER_FIRST),
        (TAGS_EVENT, component_tags, handlers.REGISTER_FIRST),
    ]
    handlers.BUILTIN_HANDLERS[:0] = added
    try:
        yield
    finally:
        for item in added:
            handlers.BUILTIN_HANDLERS.remove(item)
        COMPONENTS.clear()
        DENIED.clear()
