"""Meridian's protobuf packages (generated stubs live under ``v1``)."""
