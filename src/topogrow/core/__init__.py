"""The functional core: the paper's mathematics as pure functions on tensors.

Nothing here imports :mod:`topogrow.nn`, :mod:`topogrow.growth` or the layers above them.
A model only has to satisfy :class:`~topogrow.core.adjoint.StatefulModel`; both topological
derivative results satisfy :class:`~topogrow.core.result.TopologicalDerivativeResult`.
"""

from topogrow.core.adjoint import AdjointBatch, StatefulModel, adjoint_batches, device_and_dtype, states_and_adjoints
from topogrow.core.eigen import LeadingEigenpairs, leading_block_eigenpairs
from topogrow.core.hamiltonian import (
    dense_hamiltonian_blocks,
    dense_quadratic_form,
    hamiltonian_blocks,
    quadratic_form,
)
from topogrow.core.hessian_operator import HamiltonianHessian, leading_operator_eigenpairs
from topogrow.core.layer_kinds import Conv2d, Dense, LayerKind, Token
from topogrow.core.location import location_derivative
from topogrow.core.losses import resolve_loss
from topogrow.core.matrix_free import FirstOrder, MatrixFreeTopologicalDerivative, matrix_free_topological_derivative
from topogrow.core.result import TopologicalDerivativeResult
from topogrow.core.sampling import Sampling
from topogrow.core.topological_derivative import TopologicalDerivative, topological_derivative

__all__ = [
    "AdjointBatch",
    "Conv2d",
    "Dense",
    "FirstOrder",
    "HamiltonianHessian",
    "MatrixFreeTopologicalDerivative",
    "LayerKind",
    "Token",
    "hamiltonian_blocks",
    "quadratic_form",
    "LeadingEigenpairs",
    "Sampling",
    "StatefulModel",
    "TopologicalDerivative",
    "TopologicalDerivativeResult",
    "adjoint_batches",
    "dense_hamiltonian_blocks",
    "dense_quadratic_form",
    "device_and_dtype",
    "leading_block_eigenpairs",
    "leading_operator_eigenpairs",
    "location_derivative",
    "matrix_free_topological_derivative",
    "resolve_loss",
    "states_and_adjoints",
    "topological_derivative",
]
