"""Data-parallel training: the process group and its collectives, and FSDP sharding."""
