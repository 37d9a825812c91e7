"""The benchmark of issue 5: our operator against a plain process pool, Ray Data and the floor.

Run ``python -m benchmarks --help`` from the repository root; see ``benchmarks/README.md``.
"""
