"""Training one run: the loop, checkpoints, and (distributed.py) data-parallel contexts."""
