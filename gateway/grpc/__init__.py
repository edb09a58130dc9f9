"""The gRPC front end: ``meridian.v1.Inference`` over the shared pipeline (docs/grpc.md).

Modules: ``server`` (the listener, health, reflection, channel options),
``service`` (the Inference handlers: the edge stage), ``validate`` (the
request rules, checked on the protobuf messages, and the internal request
they become), ``convert`` (protobuf to the backend's OpenAI body, events to
chunks), ``status`` (failures as gRPC statuses with readable details).
"""

from gateway.grpc.server import SERVICE_NAME, GrpcServer
from gateway.grpc.status import Refusal, code_for

__all__ = ["SERVICE_NAME", "GrpcServer", "Refusal", "code_for"]
