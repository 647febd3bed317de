"""Proxy teacher: solver (docs/method.md §4), selection criteria (§5), coefficient search (§6) and plots."""

from ptdistill.proxy.criteria import CRITERIA, brier, get_criterion, nll, q_score, quality
from ptdistill.proxy.search import STRATEGIES, SearchResult, search
from ptdistill.proxy.solver import ProxySolution, proxy_teacher, proxy_teacher_differentiable, solve_proxy

__all__ = [
    "CRITERIA",
    "ProxySolution",
    "STRATEGIES",
    "SearchResult",
    "brier",
    "get_criterion",
    "nll",
    "proxy_teacher",
    "proxy_teacher_differentiable",
    "q_score",
    "quality",
    "search",
    "solve_proxy",
]
