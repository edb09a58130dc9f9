"""Shadow traffic: mirror live requests to a candidate version and compare (docs/shadow.md)."""
