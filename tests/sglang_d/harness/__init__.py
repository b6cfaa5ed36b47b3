"""sglang 0.5.23's own post-training HTTP layer on the CPU, for the client's tests.

``wheel`` fetches the release's wheel once (``pip download --no-deps sglang==0.5.23``) and
unpacks its diffusion runtime into a cache; ``modules`` loads that code for real, replacing only
what needs a GPU or the LLM runtime; ``server`` serves it with a small deterministic DiT loop in
place of the GPU worker. What is real and what is replaced is listed in ``modules``.
"""
