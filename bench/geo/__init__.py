"""The geo lab (issue 15): a fleet in three simulated regions on one machine,
inter-region links with published RTTs injected in user space, and the
scenarios that show what the control plane does across regions.
Run ``python -m bench.geo``; docs/geo-lab.md reads a real run."""
