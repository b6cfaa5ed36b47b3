"""Where the engine connects: the egress policy for users' URLs, and local ports."""
