"""Query strategies (heuristics) and their registry.

``metaal.strategies.get("margin")`` returns a fresh instance; ``names()`` lists the registered
heuristics; ``policy:PATH`` resolves to a learned policy from :mod:`metaal.agents`.
"""
from metaal.strategies.base import Strategy, check_k, get, names, parse_list, register, register_factory, top_k
from metaal.strategies import uncertainty  # noqa: F401  (registers random, least_confident, margin, entropy)
from metaal.strategies.uncertainty import entropy_score, least_confident_score, margin_score

__all__ = [
    "Strategy",
    "check_k",
    "entropy_score",
    "get",
    "least_confident_score",
    "margin_score",
    "names",
    "parse_list",
    "register",
    "register_factory",
    "top_k",
]
