"""Data generators for PDE-based learning tasks (NumPy/SciPy, seeded, cached to a data directory).

* :mod:`topogrow.data.pde.heat` — steady heat conduction ``-div(e^m grad u) = f`` with a random
  log-conductivity (solved by :mod:`topogrow.data.pde.diffusion`): the parameter-to-observable map and
  the inversion.
* :mod:`topogrow.data.pde.navier_stokes` — 2D periodic Navier–Stokes (vorticity form, solved by
  :mod:`topogrow.data.pde.spectral`): initial vorticity from sparse observations at time T, and wind
  (velocity) reconstruction from point sensors.

They build on :mod:`topogrow.data.task` (``Task``, the split, the relative-L2 metric), a leaf; the task
registry (:mod:`topogrow.data.tasks`) imports them only when a PDE task is made, so ``import topogrow.data``
does not load them. They are not imported here for the same reason.
"""
