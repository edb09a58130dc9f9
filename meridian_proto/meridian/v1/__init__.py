"""Generated stubs of ``meridian/v1/inference.proto`` (``make proto`` regenerates them)."""
