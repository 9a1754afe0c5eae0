"""Backends. Each module states every loss's mathematics once and registers its kernels
with ``lossbackends._dispatch.register`` when it is imported (on first use, never at
``import lossbackends``)."""
