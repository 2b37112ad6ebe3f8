"""Draw README's result figure from a finished quick-profile run.

    python book/images/make_quick_run.py runs/utkface-quick book/images/quick_run.png

Reads the run's history and model, predicts the UTKFace test split (from
$SSR_DATA_DIR) and writes learning curves beside predicted against true age.
"""

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from ssr_lib import data, evaluate, plotting, train
from ssr_lib.model import load_model

run_dir, output = Path(sys.argv[1]), Path(sys.argv[2])
history = train.read_history(run_dir / "history.csv")
test = data.load_utkface(verbose=False)["test"]
predicted = evaluate.predict_ages(load_model(run_dir / "model.keras"), test.images)
metrics = evaluate.age_metrics(test.ages, predicted)

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), width_ratios=[1.4, 1])
plotting.plot_history(history, ax=left)
plotting.plot_predictions(test.ages, predicted, ax=right,
                          title=f"UTKFace test split: MAE {metrics['mae']:.2f} years")
fig.tight_layout()
fig.savefig(output, dpi=110)
print(json.dumps(metrics))
