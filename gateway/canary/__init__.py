"""Canary releases: plan and state machine (``plan``), analysis (``analysis``),
step-window counters (``window``, ``tap``), JSON (``codec``) and the
controller that applies them (``controller``)."""
