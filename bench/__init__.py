"""Benchmarks of byok-proxy against SeaweedFS and client-side encryption tools.

Run `python -m bench`; bench/README.md explains the measurements.
"""
