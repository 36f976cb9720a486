"""2D incompressible Navier–Stokes on the periodic unit square: a batched pseudo-spectral solver, the
forcing and the Gaussian random fields of the initial vorticity, from which
:mod:`topogrow.data.pde.navier_stokes` makes its data.

Equations (vorticity–stream-function form, periodic ``[0, 1]²``)::

    ω_t + u·∇ω = ν Δω + f,      u = ∇^⊥ψ = (∂ψ/∂y, −∂ψ/∂x),      −Δψ = ω,

so ``ω = ∂v/∂x − ∂u/∂y`` and ``∇·u = 0``. The mean of ω is zero and stays zero.

Discretisation (:class:`SpectralNavierStokes`): an ``N × N`` grid ``x_j = j/N``, real FFTs
(``scipy.fft.rfft2``; a batch of fields is solved at once), the nonlinear term ``u·∇ω`` computed
pointwise on the grid and de-aliased with the 2/3 rule (only integer wavenumbers
``|k_x|, |k_y| ≤ K = ⌊(N − 1)/3⌋`` are kept, so no aliased product reaches a kept mode: the
scheme is the exact Galerkin truncation of the PDE to those modes). Time stepping is the
integrating-factor (Lawson) fourth-order Runge–Kutta method: viscosity is integrated exactly by
``exp(−ν|2πk|²t)``, the advection and forcing explicitly. For ``ν = 0, f = 0`` the truncated system
conserves the energy ``½⟨|u|²⟩`` and enstrophy ``½⟨ω²⟩`` exactly, so the only drift is RK4's
time-stepping error; a single Fourier mode (a steady solution of the Euler equations) decays as
``exp(−ν|2πk|²t)`` to rounding.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

__all__ = ["SpectralNavierStokes", "fno_forcing", "gaussian_random_field"]


def fno_forcing(grid: int, amplitude: float = 0.1) -> np.ndarray:
    """``f(x, y) = amplitude (sin(2π(x + y)) + cos(2π(x + y)))`` at the nodes ``x_j = j / grid``, indexed ``[x, y]``."""
    x = np.arange(grid) / grid
    phase = 2 * np.pi * (x[:, None] + x[None, :])
    return amplitude * (np.sin(phase) + np.cos(phase))


class SpectralNavierStokes:
    """Batched pseudo-spectral solver of ``ω_t + u·∇ω = νΔω + f`` on the periodic unit square.

    Fields are ``(..., N, N)`` arrays indexed ``[x, y]``; spectral fields are their ``rfft2``
    (``(..., N, N//2 + 1)``), restricted to the kept modes ``|k_x|, |k_y| ≤ K = ⌊(N − 1)/3⌋``
    (the 2/3 rule). ``forcing`` is ``None`` or an ``(N, N)`` array; ``dtype`` is ``"float64"`` or
    ``"float32"`` (the spectral state is then complex128 or complex64).
    """

    def __init__(self, grid: int, viscosity: float, forcing: np.ndarray | None = None, dtype: str = "float64") -> None:
        if grid < 8 or grid % 2:
            raise ValueError(f"grid must be an even number >= 8, got {grid}")
        if viscosity < 0:
            raise ValueError(f"viscosity must be >= 0, got {viscosity}")
        self.grid, self.viscosity = int(grid), float(viscosity)
        self.real = np.dtype(dtype)
        if self.real not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.complex = np.result_type(self.real, np.complex64)
        n = self.grid
        self.kmax = (n - 1) // 3
        kx = np.fft.fftfreq(n, 1.0 / n)[:, None]
        ky = np.fft.rfftfreq(n, 1.0 / n)[None, :]
        self.mask = ((np.abs(kx) <= self.kmax) & (np.abs(ky) <= self.kmax)).astype(self.real)
        k2 = (2 * np.pi) ** 2 * (kx**2 + ky**2)
        self.laplacian = -k2  # the symbol of Δ, float64
        safe = np.where(k2 > 0, k2, 1.0)
        self.inverse_laplacian = (np.where(k2 > 0, 1.0 / safe, 0.0) * self.mask).astype(self.real)  # ψ̂ = ω̂ / |2πk|²
        self.ikx = (2j * np.pi * kx * self.mask).astype(self.complex)
        self.iky = (2j * np.pi * ky * self.mask).astype(self.complex)
        if forcing is None:
            self.forcing_hat = None
        else:
            forcing = np.asarray(forcing, dtype=np.float64)
            if forcing.shape != (n, n):
                raise ValueError(f"forcing must be ({n}, {n}), got {forcing.shape}")
            self.forcing_hat = (sfft.rfft2(forcing) * self.mask).astype(self.complex)

    # -- transforms -------------------------------------------------------------------------
    def to_spectral(self, omega: np.ndarray) -> np.ndarray:
        """``rfft2`` of a real field, truncated to the kept modes."""
        out = sfft.rfft2(np.asarray(omega, dtype=self.real))
        out *= self.mask
        return out

    def to_physical(self, omega_hat: np.ndarray) -> np.ndarray:
        """The real field on the grid."""
        return sfft.irfft2(omega_hat, s=(self.grid, self.grid))

    def velocity(self, omega_hat: np.ndarray) -> np.ndarray:
        """``(..., 2, N, N)``: ``u = ∂ψ/∂y``, ``v = −∂ψ/∂x`` with ``−Δψ = ω``."""
        psi = omega_hat * self.inverse_laplacian
        both = np.stack([self.iky * psi, -self.ikx * psi], axis=-3)
        return sfft.irfft2(both, s=(self.grid, self.grid))

    def energy(self, omega_hat: np.ndarray) -> np.ndarray:
        """Kinetic energy ``½⟨u² + v²⟩`` (mean over the square) per field."""
        return 0.5 * (self.velocity(omega_hat).astype(np.float64) ** 2).sum(axis=-3).mean(axis=(-2, -1))

    def enstrophy(self, omega_hat: np.ndarray) -> np.ndarray:
        """Enstrophy ``½⟨ω²⟩`` per field."""
        return 0.5 * (self.to_physical(omega_hat).astype(np.float64) ** 2).mean(axis=(-2, -1))

    # -- time stepping ----------------------------------------------------------------------
    def nonlinear(self, omega_hat: np.ndarray) -> np.ndarray:
        """``−P(u·∇ω) + f̂``: the explicit part of the right-hand side, de-aliased."""
        psi = omega_hat * self.inverse_laplacian
        stacked = np.empty((4, *omega_hat.shape), dtype=self.complex)
        np.multiply(self.iky, psi, out=stacked[0])
        np.multiply(self.ikx, psi, out=stacked[1])
        np.negative(stacked[1], out=stacked[1])
        np.multiply(self.ikx, omega_hat, out=stacked[2])
        np.multiply(self.iky, omega_hat, out=stacked[3])
        u, v, wx, wy = sfft.irfft2(stacked, s=(self.grid, self.grid), overwrite_x=True)
        u *= wx
        v *= wy
        u += v
        out = sfft.rfft2(u, overwrite_x=True)
        out *= -self.mask
        if self.forcing_hat is not None:
            out += self.forcing_hat
        return out

    def max_speed(self, omega_hat: np.ndarray) -> float:
        """``max |u|`` over the batch and the grid."""
        u, v = np.moveaxis(self.velocity(omega_hat), -3, 0)
        return float(np.sqrt(u.astype(np.float64) ** 2 + v.astype(np.float64) ** 2).max()) if u.size else 0.0

    def stable_dt(self, omega_hat: np.ndarray, max_dt: float, cfl: float = 1.0) -> float:
        """``min(max_dt, cfl / (max|u| · 2πK√2))``: RK4 is stable up to a CFL number of about 2.8."""
        speed = self.max_speed(omega_hat)
        if speed == 0:
            return float(max_dt)
        return float(min(max_dt, cfl / (speed * 2 * np.pi * self.kmax * math.sqrt(2))))

    def solve(self, omega_hat: np.ndarray, final_time: float, dt: float) -> np.ndarray:
        """Advance spectral fields ``(..., N, N//2 + 1)`` to ``final_time`` in ``ceil(T / dt)`` equal
        integrating-factor RK4 (Lawson) steps; returns the spectral fields at ``final_time``.

        With ``L = νΔ`` and ``N(ω)`` = :meth:`nonlinear`, one step of size ``h`` is::

            k1 = N(ω),  k2 = N(e^{Lh/2}(ω + h/2 k1)),  k3 = N(e^{Lh/2}ω + h/2 k2),
            k4 = N(e^{Lh}ω + h e^{Lh/2} k3),
            ω ← e^{Lh}ω + h/6 (e^{Lh} k1 + 2 e^{Lh/2}(k2 + k3) + k4).
        """
        if final_time < 0 or dt <= 0:
            raise ValueError(f"need final_time >= 0 and dt > 0, got {final_time} and {dt}")
        omega = (np.asarray(omega_hat) * self.mask).astype(self.complex)
        steps = int(math.ceil(final_time / dt - 1e-9)) if final_time > 0 else 0
        if steps == 0:
            return omega
        h = final_time / steps
        full = np.exp(self.viscosity * self.laplacian * h).astype(self.real)
        half = np.exp(self.viscosity * self.laplacian * h / 2).astype(self.real)
        h2, h6, hr = self.real.type(h / 2), self.real.type(h / 6), self.real.type(h)
        for _ in range(steps):
            k1 = self.nonlinear(omega)
            k2 = self.nonlinear(half * (omega + h2 * k1))
            k3 = self.nonlinear(half * omega + h2 * k2)
            k4 = self.nonlinear(full * omega + hr * (half * k3))
            k2 += k3
            k2 *= 2 * half
            k1 *= full
            k1 += k2
            k1 += k4
            k1 *= h6
            omega *= full
            omega += k1
        if not np.isfinite(omega).all():
            raise FloatingPointError("Navier–Stokes solve blew up (time step too large?)")
        return omega


def gaussian_random_field(
    rng: np.random.Generator, n: int, grid: int, alpha: float = 2.5, tau: float = 7.0, sigma: float | None = None
) -> np.ndarray:
    """``n`` mean-zero Gaussian fields with covariance ``σ²(−Δ + τ²I)^(−α)`` on the periodic unit square.

    Returned as ``rfft2`` coefficients ``(n, grid, grid//2 + 1)`` (complex128), not yet truncated:
    ``ω̂_k = grid² σ (4π²|k|² + τ²)^(−α/2) ξ_k`` with ``ξ_k`` the (Hermitian) Fourier coefficients of
    white noise scaled to ``E|ξ_k|² = 1``; ``σ = τ^(α−1)`` by default; ``ω̂_0 = 0``.
    """
    sigma = tau ** (alpha - 1) if sigma is None else sigma
    white = sfft.rfft2(rng.standard_normal((n, grid, grid)))  # E|c_k|² = grid²
    kx = np.fft.fftfreq(grid, 1.0 / grid)[:, None]
    ky = np.fft.rfftfreq(grid, 1.0 / grid)[None, :]
    spectrum = sigma * (4 * np.pi**2 * (kx**2 + ky**2) + tau**2) ** (-alpha / 2)
    spectrum[0, 0] = 0.0
    return white * (grid * spectrum)  # grid² · spectrum · c_k / grid
