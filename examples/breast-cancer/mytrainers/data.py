"""Write data/cancer.npz: scikit-learn's breast-cancer table, standardised, split 60/20/20.

    python -m mytrainers.data
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer


def write(path: str = "data/cancer.npz", seed: int = 0) -> Path:
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    mean, std = x[:a].mean(0), x[:a].std(0) + 1e-6  # statistics of the training split only
    x = (x - mean) / std
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x_train=x[:a], y_train=y[:a], x_val=x[a:b], y_val=y[a:b], x_test=x[b:], y_test=y[b:])
    return out


if __name__ == "__main__":
    print(f"wrote {write()}")
