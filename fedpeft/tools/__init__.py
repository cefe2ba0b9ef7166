"""Tools around the library: launchers, sweeps, reports, rescoring, the in-process runner,
deployment, export and inference. The library (the rest of ``fedpeft``) and the apps never
import this package.
"""  # noqa: D205
