"""Models and datasets from a Hub-protocol server (the local one; huggingface.co when reachable)."""
