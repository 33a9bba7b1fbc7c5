"""BLAS thread limits for environment steps (:func:`metaal.learners.blas_limit`).

One step fits a logistic regression on tens to hundreds of rows; multi-threaded BLAS only adds
synchronisation there, and on a loaded machine (SB3 vector envs, several jobs) it makes steps 10 to
20 times slower. The environments therefore run reset/step under a BLAS thread limit
(``blas_threads``, default 1; None leaves the libraries alone); the previous limits are restored
after each call, so torch and the rest of the process are unaffected. The labeling session uses
the same limit.
"""
from __future__ import annotations

from metaal.learners import blas_limit

__all__ = ["blas_limit"]
