"""tooling: the harness that drives capq's roles from outside (local stack, demo, tiny models, processes, test data).

Part of the repository, not of the runtime images: no role imports it.
"""
