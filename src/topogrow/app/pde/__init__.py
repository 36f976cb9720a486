"""Data generators for PDE-based learning tasks (NumPy/SciPy, seeded, cached to a data directory).

* :mod:`topogrow.app.pde.heat` — steady heat conduction ``-div(e^m grad u) = f`` with a random
  log-conductivity: the parameter-to-observable map and the inversion.
* :mod:`topogrow.app.pde.navier_stokes` — 2D periodic Navier–Stokes (vorticity form, pseudo-spectral):
  initial vorticity from sparse observations at time T, and wind (velocity) reconstruction from point sensors.

Submodules are not imported here: they import :mod:`topogrow.app.tasks` (for ``Task``), which may in turn
register their task factories, so importing them eagerly from this package could be circular.
"""
