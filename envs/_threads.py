"""BLAS thread limits for environment steps.

One step fits a logistic regression on tens to hundreds of rows; multi-threaded BLAS only adds
synchronisation there, and on a loaded machine (SB3 vector envs, several jobs) it makes steps 10 to
20 times slower. The environments therefore run reset/step under a BLAS thread limit
(``blas_threads``, default 1; None leaves the libraries alone); the previous limits are restored
after each call, so torch and the rest of the process are unaffected.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ContextManager

_CONTROLLER: Any = None


def blas_limit(n: int | None) -> ContextManager[Any]:
    """A context limiting every loaded BLAS to ``n`` threads (no-op for None)."""
    global _CONTROLLER
    if n is None:
        return nullcontext()
    if _CONTROLLER is None:
        import scipy.optimize  # noqa: F401  (load scipy's and sklearn's BLAS before the snapshot)
        import sklearn.linear_model  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=int(n), user_api="blas")
