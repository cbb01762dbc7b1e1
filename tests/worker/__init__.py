"""The training worker (arkor_ops.worker): runs, checkpoints, faults, the Unsloth path."""
