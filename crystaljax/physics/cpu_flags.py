"""XLA's CPU vector width: 512-bit vectors on CPUs with AVX-512 (no JAX import, so the package can set it at import).

Measured on the fingerprint kernel: docs/PERFORMANCE.md ("512-bit vector width").
"""

from __future__ import annotations

VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width=512"


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo", flag: str = "avx512f") -> bool:
    """True if the CPU flags in ``cpuinfo`` (Linux) list ``flag`` (avx512f); False if absent or unreadable."""
    try:
        with open(cpuinfo) as handle:
            text = handle.read()
    except OSError:
        return False
    return any(line.startswith("flags") and flag in line.split() for line in text.splitlines())


def configure_xla_cpu(environ=None, cpuinfo: str = "/proc/cpuinfo", required_cpu_flag: str = "avx512f") -> str | None:
    """Ask XLA's CPU compiler for 512-bit vectors when that can help; returns the flag set, or None.

    Sets ``XLA_FLAGS`` to :data:`VECTOR_WIDTH_FLAG` only if the user has not set ``XLA_FLAGS`` at
    all and the CPU lists ``required_cpu_flag`` (AVX-512F by default; "avx2" also measured a gain on
    an AVX2-only CPU, see docs/PERFORMANCE.md); otherwise changes nothing (XLA's default width).
    XLA reads the variable when JAX creates its CPU backend (the first computation or
    ``jax.devices()``), so call this before that, e.g. as ``crystaljax/__init__.py`` does.
    Results are unchanged (tests/test_kernel.py); only the speed may differ (docs/PERFORMANCE.md).
    """
    import os

    environ = os.environ if environ is None else environ
    if "XLA_FLAGS" in environ or not cpu_has_avx512(cpuinfo, required_cpu_flag):
        return None
    environ["XLA_FLAGS"] = VECTOR_WIDTH_FLAG
    return VECTOR_WIDTH_FLAG
