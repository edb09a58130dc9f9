"""What every config section shares: strictness and the cloud place names."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
GCP_LOCATION = re.compile(r"^([a-z]+-[a-z]+\d+|global)$")


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not silently become a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def location(value: str) -> str:
    """A weights location (``s3://``, ``gs://``, ``file:///``), normalised."""
    from regions.replication.location import parse_location

    return str(parse_location(value))
