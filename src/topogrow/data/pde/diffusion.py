r"""Steady diffusion with a random log-conductivity on the unit square: the finite-volume solver, the
Karhunen–Loève random field and the sensors, from which :mod:`topogrow.data.pde.heat` makes its data.

**Equation.** On the unit square :math:`\Omega = (0, 1)^2`

.. math::

    -\nabla\cdot\big(e^{m(x)}\,\nabla u(x)\big) = f(x) \quad\text{in } \Omega, \qquad u = 0 \text{ on } \partial\Omega,

with conductivity :math:`\kappa = e^{m}` and, for the data sets, a uniform heat source :math:`f \equiv 1`.

**Grid and discretisation** (:func:`solve_diffusion`). ``n x n`` square cells of side ``h = 1/n``
(``n = 32`` by default); ``m``, ``f`` and ``u`` live at the cell centres ``((i + 1/2) h, (j + 1/2) h)``
and every array is indexed ``[i, j]`` = ``[x index, y index]``. The 5-point cell-centred finite-volume
scheme balances the fluxes through the four faces of each cell,

.. math::

    \sum_{\text{faces}} \kappa_{f}\,\frac{u_P - u_N}{h^2} = f_P ,

with the face conductivity the harmonic mean ``2 k_P k_N / (k_P + k_N)`` of the two cells (or their
arithmetic mean). On a boundary face the neighbour is the wall value ``u = 0`` at distance ``h/2``, so the
coefficient is ``2 k_P / h^2``. The matrix is symmetric positive definite; it is assembled with
``scipy.sparse`` and solved with a sparse LU (``scipy.sparse.linalg.splu``). The scheme is second order:
``tests/data/test_pde_heat.py`` checks the error against a manufactured solution on grids 16, 32 and 64.

**Random field** (:func:`kl_basis`). ``m`` is a Gaussian random field with mean ``mean`` (0) and the
squared-exponential covariance ``C(x, x') = sigma^2 exp(-|x - x'|^2 / (2 l^2))`` (``sigma = 1``,
correlation length ``l = length_scale``, 0.2 by default), represented by its truncated
Karhunen–Loève expansion

.. math::

    m(x) = \mu + \sigma \sum_{k=1}^{K} \sqrt{\lambda_k}\,\xi_k\,\phi_k(x), \qquad \xi_k \sim N(0, 1)
    \text{ i.i.d.},

with ``K = n_modes`` (32) modes. The eigenpairs are those of the covariance operator discretised on the cell
centres with the midpoint rule (Nyström); the kernel is separable, so they are products of the
eigenpairs of the 1-D kernel, computed exactly. ``phi_k`` are L2(Omega)-orthonormal and ``lambda_k``
(of the unit-variance kernel) sum to 1 over all modes, so ``sum_{k<=K} lambda_k`` is the fraction of the
variance kept (0.996 for ``l = 0.2, K = 32``; 0.97 for ``l = 0.15``; 0.83 for ``l = 0.1``; see
:attr:`KLBasis.captured_variance`).

**Observations.** ``u`` is read at ``sensors x sensors`` interior sensors (7 x 7 = 49 by default) at
``(a/(s+1), b/(s+1))``, ``a, b = 1..s``, by bilinear interpolation between the cell centres and the wall
(where ``u = 0``). Noise is Gaussian and relative to each sample's observation scale: sample ``i`` gets
``d_i = u_i(sensors) + noise * r_i * eta``, ``eta ~ N(0, I)``, where ``r_i`` is the root mean square of
that sample's noise-free observations ``u_i(sensors)`` and ``noise = 0.01`` (1%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def cell_centres(n: int) -> np.ndarray:
    """The ``n`` cell-centre coordinates ``(i + 1/2) / n`` of a uniform grid on [0, 1]."""
    return (np.arange(n) + 0.5) / n


def diffusion_matrix(log_kappa: np.ndarray, average: str = "harmonic") -> sp.csr_matrix:
    """The ``n^2 x n^2`` finite-volume matrix of ``-div(exp(m) grad u)`` with ``u = 0`` on the wall.

    ``log_kappa`` is ``m`` at the cell centres, ``(n, n)`` indexed ``[x, y]``; unknown ``(i, j)`` is row
    ``i * n + j``. Face conductivities are the ``average`` ("harmonic" or "arithmetic") of the two cells;
    a wall face uses the cell's own conductivity at distance ``h/2``.
    """
    m = np.asarray(log_kappa, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"log_kappa must be a square (n, n) array with n >= 2, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("log_kappa contains NaN or inf")
    if average not in ("harmonic", "arithmetic"):
        raise ValueError(f"average must be 'harmonic' or 'arithmetic', got {average!r}")
    n = m.shape[0]
    inv_h2 = float(n * n)
    kappa = np.exp(m)

    def face(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 2 * a * b / (a + b) if average == "harmonic" else (a + b) / 2

    kx = face(kappa[:-1, :], kappa[1:, :]) * inv_h2  # faces between (i, j) and (i + 1, j)
    ky = face(kappa[:, :-1], kappa[:, 1:]) * inv_h2  # faces between (i, j) and (i, j + 1)
    diagonal = np.zeros((n, n))
    diagonal[:-1, :] += kx
    diagonal[1:, :] += kx
    diagonal[:, :-1] += ky
    diagonal[:, 1:] += ky
    wall = 2 * kappa * inv_h2
    diagonal[0, :] += wall[0, :]
    diagonal[-1, :] += wall[-1, :]
    diagonal[:, 0] += wall[:, 0]
    diagonal[:, -1] += wall[:, -1]

    index = np.arange(n * n).reshape(n, n)
    rows = [index.ravel(), index[:-1, :].ravel(), index[1:, :].ravel(), index[:, :-1].ravel(), index[:, 1:].ravel()]
    cols = [index.ravel(), index[1:, :].ravel(), index[:-1, :].ravel(), index[:, 1:].ravel(), index[:, :-1].ravel()]
    vals = [diagonal.ravel(), -kx.ravel(), -kx.ravel(), -ky.ravel(), -ky.ravel()]
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n))


def solve_diffusion(log_kappa: np.ndarray, f: np.ndarray | float = 1.0, average: str = "harmonic") -> np.ndarray:
    """Solve ``-div(exp(m) grad u) = f`` on the unit square with ``u = 0`` on the boundary.

    ``log_kappa`` (``m``) and ``f`` (an array or a constant) are given at the ``n x n`` cell centres,
    indexed ``[x, y]``; returns ``u`` there, ``(n, n)``. See the module docstring for the scheme.
    """
    matrix = diffusion_matrix(log_kappa, average)
    n = matrix.shape[0]
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), (int(round(n**0.5)),) * 2).ravel()
    u = spla.splu(matrix.tocsc()).solve(rhs)
    return u.reshape(np.shape(log_kappa))


# ----------------------------------------------------------------------------------------------- random field


@dataclass(frozen=True)
class KLBasis:
    """Truncated Karhunen–Loève basis of the squared-exponential field on an ``n x n`` cell grid.

    ``modes`` is ``(K, n, n)`` (``phi_k`` at the cell centres, L2-orthonormal: ``h^2 sum phi_k phi_l =
    delta_kl``), ``eigenvalues`` ``(K,)`` in decreasing order for unit variance.
    """

    modes: np.ndarray
    eigenvalues: np.ndarray
    length_scale: float
    sigma: float
    mean: float

    @property
    def captured_variance(self) -> float:
        """Fraction of the field's variance the kept modes carry (the eigenvalues of all modes sum to 1)."""
        return float(self.eigenvalues.sum())

    def pointwise_variance(self) -> np.ndarray:
        """Variance of the truncated field at each cell centre, ``sigma^2 sum_k lambda_k phi_k^2``."""
        return self.sigma**2 * np.einsum("k,kij->ij", self.eigenvalues, self.modes**2)

    def field(self, xi: np.ndarray) -> np.ndarray:
        """``m = mean + sigma sum_k sqrt(lambda_k) xi_k phi_k`` for coefficients ``(K,)`` or ``(N, K)``."""
        xi = np.asarray(xi, dtype=np.float64)
        if xi.shape[-1] != len(self.eigenvalues):
            raise ValueError(f"expected {len(self.eigenvalues)} KL coefficients, got shape {xi.shape}")
        weighted = xi * (self.sigma * np.sqrt(self.eigenvalues))
        return self.mean + np.tensordot(weighted, self.modes, axes=([-1], [0]))


def kl_basis(grid: int = 32, n_modes: int = 32, length_scale: float = 0.2, sigma: float = 1.0, mean: float = 0.0):
    """The leading ``n_modes`` KL modes of ``C(x, x') = sigma^2 exp(-|x - x'|^2 / (2 l^2))`` on the cell grid.

    Midpoint-rule (Nyström) discretisation; the kernel is a product of 1-D kernels, so the 2-D
    eigenpairs are products of the 1-D ones (``lambda_a lambda_b``, ``phi_a(x) phi_b(y)``).
    """
    if grid < 2 or not 1 <= n_modes <= grid * grid:
        raise ValueError(f"need grid >= 2 and 1 <= n_modes <= grid^2, got grid={grid}, n_modes={n_modes}")
    if length_scale <= 0 or sigma <= 0:
        raise ValueError(f"length_scale and sigma must be positive, got {length_scale} and {sigma}")
    h = 1.0 / grid
    x = cell_centres(grid)
    kernel = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * length_scale**2))
    values, vectors = scipy.linalg.eigh(kernel * h)
    values = np.clip(values, 0.0, None)
    phi = vectors / np.sqrt(h)  # columns L2(0, 1)-normalised
    products = np.outer(values, values)
    order = np.argsort(products.ravel(), kind="stable")[::-1][:n_modes]
    a, b = np.unravel_index(order, products.shape)
    modes = phi[:, a].T[:, :, None] * phi[:, b].T[:, None, :]
    # fix the sign of each mode (eigh's is arbitrary): its largest-magnitude entry is positive
    flat = modes.reshape(n_modes, -1)
    signs = np.sign(flat[np.arange(n_modes), np.abs(flat).argmax(axis=1)])
    modes = modes * signs[:, None, None]
    return KLBasis(modes, products.ravel()[order].copy(), float(length_scale), float(sigma), float(mean))


# ----------------------------------------------------------------------------------------------- observations


def sensor_locations(sensors: int = 7) -> np.ndarray:
    """``(sensors^2, 2)`` points ``(a/(s+1), b/(s+1))``, ``a, b = 1..s``, in ``[x, y]`` row-major order."""
    if sensors < 1:
        raise ValueError(f"sensors must be >= 1, got {sensors}")
    t = np.arange(1, sensors + 1) / (sensors + 1)
    return np.stack(np.meshgrid(t, t, indexing="ij"), axis=-1).reshape(-1, 2)


def observation_matrix(grid: int, points: np.ndarray) -> sp.csr_matrix:
    """Sparse ``(P, grid^2)`` bilinear interpolation from the cell centres (and ``u = 0`` on the wall)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or ((points < 0) | (points > 1)).any():
        raise ValueError("points must be (P, 2) in the closed unit square")
    nodes = np.concatenate([[0.0], cell_centres(grid), [1.0]])  # padded: wall, centres, wall
    rows, cols, vals = [], [], []
    for p, (px, py) in enumerate(points):
        ix = int(np.clip(np.searchsorted(nodes, px, side="right") - 1, 0, grid))
        iy = int(np.clip(np.searchsorted(nodes, py, side="right") - 1, 0, grid))
        tx = (px - nodes[ix]) / (nodes[ix + 1] - nodes[ix])
        ty = (py - nodes[iy]) / (nodes[iy + 1] - nodes[iy])
        for dx, wx in ((0, 1 - tx), (1, tx)):
            for dy, wy in ((0, 1 - ty), (1, ty)):
                i, j = ix + dx - 1, iy + dy - 1  # padded index -> cell index; the wall is outside 0..grid-1
                if 0 <= i < grid and 0 <= j < grid and wx * wy != 0:
                    rows.append(p)
                    cols.append(i * grid + j)
                    vals.append(wx * wy)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(points), grid * grid))


def coarsen(fields: np.ndarray, size: int) -> np.ndarray:
    """Average ``(..., n, n)`` cell values over blocks to ``(..., size, size)`` (``size`` divides ``n``)."""
    n = fields.shape[-1]
    if size < 1 or n % size:
        raise ValueError(f"coarse size {size} must divide the grid size {n}")
    r = n // size
    return fields.reshape(*fields.shape[:-2], size, r, size, r).mean(axis=(-3, -1))
