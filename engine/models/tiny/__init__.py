"""The built-in tiny model of the CPU demo: an SD3 DiT in pixel space with shipped weights."""
