"""Backends. Each ``*_backend`` module states every loss's mathematics once (itself or in
its ``_numpy_*``/``_numba_*`` modules) and registers its kernels with
``lossbackends._dispatch.register`` when it is imported (on first use, never at
``import lossbackends``)."""
