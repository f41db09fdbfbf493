"""How a run's B->A translations get the embedded test split's shape colours wrong.

    python experiments/embedded/colours.py RUN_OR_BUNDLE [...]

For each model: the mean absolute error of the background, and for each palette colour the
mean predicted colour inside the visible (eroded) shapes of that colour, with the mean and the
worst absolute error. A colour permutation (one colour turned into another) shows as a
predicted mean near another palette colour; stripes left in show as a large error with the
right mean.
"""
import sys

import numpy as np

from cyclejax import bundle, embedded
from cyclejax import embedded_score as es


def main(models: list[str]) -> None:
    test_A, test_B, masks = embedded.load_test_pairs()
    vis = es.visible_masks(masks)
    target = test_A / 255.0
    for model in models:
        fn = bundle.load_any(model).jit_apply("BtoA")
        pred = np.concatenate([np.asarray(fn(test_B[i:i + 20])) for i in range(0, len(test_B), 20)])
        pred = (pred.astype(np.float64) + 1.0) / 2.0
        background = ~masks.any(axis=1)
        print(f"{model}: background error {np.abs(pred - target)[background].mean():.4f}")
        rows = []
        for k in range(vis.shape[1]):
            for n in range(len(pred)):
                m = vis[n, k]
                if m.sum() >= 9:
                    rows.append((tuple(float(x) for x in np.round(target[n][m].mean(0), 2)), pred[n][m].mean(0),
                                 np.abs(pred[n][m] - target[n][m]).mean()))
        for colour in sorted({r[0] for r in rows}):
            sel = [r for r in rows if r[0] == colour]
            print(f"  truth {colour}: {len(sel)} shapes, predicted {np.round(np.mean([r[1] for r in sel], 0), 2)}, "
                  f"error {np.mean([r[2] for r in sel]):.3f} (worst {max(r[2] for r in sel):.3f})")


if __name__ == "__main__":
    main(sys.argv[1:])
