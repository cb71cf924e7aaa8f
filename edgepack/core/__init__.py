"""edgepack's numpy core: metrics, limit checks, batching, integrity and latency statistics.

Imports only the standard library and numpy (an import-linter contract enforces it). The same files are copied into
every bundle (``runner/edgepack_core/``), so a device and the build host compute parity with the SAME code. Modules
import each other relatively, which keeps them working both as ``edgepack.core`` and as a bundle's ``edgepack_core``.
"""
