"""The built-in `classification` task: text, tabular or image examples -> one label.

Metrics: accuracy, macro precision/recall/F1, AUC for two classes, and a
confusion matrix written as JSON and PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kit
from kit.data import LabelField


class Classification(kit.Task):
    """Predict one label per example (softmax head, cross-entropy loss)."""

    name = "classification"
    description = (
        "Assign one label per example (text, text pair, tabular or image); accuracy, precision, recall, F1, AUC."
    )
    default_target = ("label",)
    input_kinds = ("text", "text_pair", "tabular", "image", "*")

    def target_fields(self, columns: list[str]) -> list[LabelField]:
        if len(columns) != 1:
            raise kit.ConfigError(
                f"classification predicts one label column; data.target names {len(columns)}: {columns}."
            )
        return [LabelField(columns[0])]

    @property
    def labels(self) -> list[str]:
        return self.fields[0].vocabulary

    def build_head(self, representation: Any) -> Any:
        import keras

        if len(self.labels) < 2:
            raise kit.DataError(f"classification needs at least two labels in the training data, found {self.labels}.")
        # float32 logits keep the softmax stable under mixed precision.
        return keras.layers.Dense(len(self.labels), dtype="float32", name="logits")(representation)

    def loss(self) -> Any:
        import keras

        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self) -> list[Any]:
        import keras

        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def postprocess(self, outputs: Any) -> Any:
        import keras

        return keras.ops.softmax(outputs, axis=-1)

    def served_outputs(self, outputs: Any) -> dict[str, Any]:
        """What `predictions()` gives, inside the model: the label's name, its probability, every probability."""
        import keras

        probabilities = keras.layers.Softmax(name="probabilities")(outputs)
        best = keras.ops.argmax(probabilities, axis=-1)
        names = keras.layers.StringLookup(vocabulary=self.labels, invert=True, num_oov_indices=0, name="label")
        return {"label": names(best), "probability": keras.ops.max(probabilities, axis=-1),
                "probabilities": probabilities}  # fmt: skip

    def export_metadata(self) -> dict[str, Any]:
        return {
            "label": "the predicted label's name",
            "probability": "its probability",
            "probabilities": "one probability per label, in the order of `labels`",
            "labels": list(self.labels),
        }

    def evaluate(self, targets: Any, outputs: Any) -> dict[str, float]:
        return classification_metrics(targets, _softmax(outputs), len(self.labels))

    def write_reports(self, run_dir: Path, split: str, targets: Any, outputs: Any) -> list[Path]:
        import json

        from kit.plots import plot_confusion

        matrix = confusion_matrix(targets, outputs.argmax(axis=-1), len(self.labels)).tolist()
        json_path = run_dir / f"confusion_{split}.json"
        json_path.write_text(json.dumps({"labels": self.labels, "matrix": matrix}, indent=2) + "\n", encoding="utf-8")
        png_path = plot_confusion(matrix, self.labels, run_dir / f"confusion_{split}.png", f"{split} confusion matrix")
        return [json_path, png_path]

    def predictions(self, outputs: Any) -> list[dict[str, Any]]:
        probabilities = _softmax(outputs)
        results = []
        for row in probabilities:
            best = int(row.argmax())
            results.append(
                {
                    "label": self.labels[best],
                    "probability": round(float(row[best]), 6),
                    "probabilities": {label: round(float(p), 6) for label, p in zip(self.labels, row)},
                }
            )
        return results


def _softmax(logits: Any) -> Any:
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def confusion_matrix(targets: Any, predicted: Any, classes: int) -> Any:
    import numpy as np

    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (targets.astype(int), predicted.astype(int)), 1)
    return matrix


def classification_metrics(targets: Any, probabilities: Any, classes: int) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 and (two classes) ROC AUC."""
    import numpy as np

    predicted = probabilities.argmax(axis=-1)
    matrix = confusion_matrix(targets, predicted, classes).astype(float)
    true_positive = np.diag(matrix)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(true_positive / matrix.sum(axis=0))
        recall = np.nan_to_num(true_positive / matrix.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    present = matrix.sum(axis=1) > 0  # macro averages over classes present in this split
    metrics = {
        "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "precision": float(precision[present].mean()),
        "recall": float(recall[present].mean()),
        "f1": float(f1[present].mean()),
    }
    if classes == 2:
        metrics["auc"] = roc_auc(targets == 1, probabilities[:, 1])
    return metrics


def roc_auc(positive: Any, scores: Any) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks)."""
    import numpy as np

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    sorted_scores = np.asarray(scores)[order]
    i = 0
    while i < len(sorted_scores):
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@kit.hookimpl
def register_tasks(register: Any) -> None:
    register(Classification)
