"""Set before anything imports grpc (``gateway.cli.main`` imports this module first).

gRPC's C core reads ``GRPC_VERBOSITY`` when it is loaded and logs its own copy
of a failed bind (``add_port.cc: Failed to add port``) above the one line the
CLI prints for it; ``meridian -v`` keeps gRPC's debug logging.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault(
    "GRPC_VERBOSITY", "DEBUG" if set(sys.argv[1:2]) & {"-v", "--verbose"} else "NONE"
)
