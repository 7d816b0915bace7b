"""The built-in `regression` task: predict one or several numbers.

Targets are normalised with training mean and standard deviation for
optimisation; predictions and metrics (MAE, RMSE, R²) are in original units.
"""

from __future__ import annotations

from typing import Any

import kit
from kit.data import NumberField


class Regression(kit.Task):
    """Predict numeric targets (linear head, mean-squared-error loss on normalised targets)."""

    name = "regression"
    description = "Predict one or several numbers (tabular, text, text pair or image); MAE, RMSE, R² in original units."
    default_target = ("target",)
    input_kinds = ("tabular", "text", "text_pair", "image", "*")

    def target_fields(self, columns: list[str]) -> list[NumberField]:
        return [NumberField(column, normalize=True) for column in columns]

    def build_head(self, representation: Any) -> Any:
        import keras

        return keras.layers.Dense(len(self.fields), dtype="float32", name="prediction")(representation)

    def loss(self) -> Any:
        import keras

        return keras.losses.MeanSquaredError()

    def metrics(self) -> list[Any]:
        import keras

        return [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]

    def denormalize(self, outputs: Any) -> Any:
        """Model outputs (normalised) -> original units, shape (examples, targets)."""
        import numpy as np

        outputs = np.asarray(outputs).reshape(len(outputs), -1)
        return np.stack([f.decode(outputs[:, i]) for i, f in enumerate(self.fields)], axis=-1)

    def postprocess(self, outputs: Any) -> Any:
        from keras import ops

        mean = ops.convert_to_tensor([f.mean for f in self.fields], dtype="float32")
        std = ops.convert_to_tensor([f.std for f in self.fields], dtype="float32")
        return outputs * std + mean

    def served_outputs(self, outputs: Any) -> dict[str, Any]:
        """Predictions in the user's units: the model learns normalised targets, the export undoes it."""
        import keras

        units = keras.layers.Rescaling(
            scale=[f.std if f.normalize else 1.0 for f in self.fields],
            offset=[f.mean if f.normalize else 0.0 for f in self.fields],
            name="prediction",
        )
        return {"prediction": units(outputs)}

    def export_metadata(self) -> dict[str, Any]:
        return {
            "prediction": "one number per target column, in the order of `targets`, in the data's own units",
            "targets": [f.column for f in self.fields],
        }

    def evaluate(self, targets: Any, outputs: Any) -> dict[str, float]:
        import numpy as np

        predicted = self.denormalize(outputs)
        actual = self.denormalize(np.asarray(targets).reshape(len(targets), -1))
        error = predicted - actual
        residual = (error**2).sum(axis=0)
        total = ((actual - actual.mean(axis=0)) ** 2).sum(axis=0)
        r2 = 1 - residual / np.where(total == 0, 1, total)
        metrics = {
            "mae": float(np.abs(error).mean()),
            "rmse": float(np.sqrt((error**2).mean())),
            "r2": float(r2.mean()),
        }
        if len(self.fields) > 1:
            for i, f in enumerate(self.fields):
                metrics[f"mae_{f.column}"] = float(np.abs(error[:, i]).mean())
                metrics[f"r2_{f.column}"] = float(r2[i])
        return metrics

    def predictions(self, outputs: Any) -> list[dict[str, Any]]:
        values = self.denormalize(outputs)
        return [{f.column: float(row[i]) for i, f in enumerate(self.fields)} for row in values]


@kit.hookimpl
def register_tasks(register: Any) -> None:
    register(Regression)
