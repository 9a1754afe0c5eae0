"""What the boosting tests share: which libraries are installed, the objectives' modules,
closed forms, and the libraries' training parameters (small trees, one thread,
deterministic)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import lossbackends as lb

HAVE_XGBOOST = importlib.util.find_spec("xgboost") is not None
HAVE_LIGHTGBM = importlib.util.find_spec("lightgbm") is not None
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_xgboost = pytest.mark.skipif(
    not HAVE_XGBOOST, reason="XGBoost is not installed (pip install 'lossbackends[xgboost]')")
needs_lightgbm = pytest.mark.skipif(
    not HAVE_LIGHTGBM, reason="LightGBM is not installed (pip install 'lossbackends[lightgbm]')")
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN,
                                   reason="scikit-learn is not installed (its bundled datasets)")
LIBRARIES = {"xgboost": lb.xgboost, "lightgbm": lb.lightgbm}


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

XGB_PARAMS = dict(max_depth=3, eta=0.3, tree_method="hist", nthread=1, base_score=0.0)
LGB_PARAMS = dict(num_leaves=8, learning_rate=0.3, verbose=-1, num_threads=1,
                  deterministic=True, force_row_wise=True)
