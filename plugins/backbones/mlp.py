"""`mlp`: a table row through a multi-layer perceptron.

Normalisation (`keras.layers.Normalization`, with the training rows' mean and
standard deviation) and category lookup (`keras.layers.StringLookup`, one-hot)
live inside the model, so the saved model takes the raw column values.
"""

from __future__ import annotations

import re
from typing import Any

import kit
from kit.data import NumberField


def safe_name(column: str) -> str:
    """A column name as a Keras input or layer name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", column) or "feature"


class MLP(kit.Backbone):
    name = "mlp"
    description = "Multi-layer perceptron over normalised numbers and one-hot categories (model.hidden_units)."
    input_kinds = ("tabular",)
    sizes = {"mlp": {}}

    def build(self) -> kit.Built:
        import keras

        fields = self.kind.fields
        inputs = {
            f.column: keras.Input(
                shape=(), dtype="float32" if isinstance(f, NumberField) else "string", name=safe_name(f.column)
            )
            for f in fields
        }
        parts = [part for part in (self.numbers(inputs), *self.categories(inputs)) if part is not None]
        x = keras.layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
        for i, units in enumerate(self.config.model.hidden_units):
            x = keras.layers.Dense(units, activation="relu", name=f"mlp_{i}")(x)
            if self.config.model.dropout:
                x = keras.layers.Dropout(self.config.model.dropout)(x)
        return kit.Built(inputs, x)

    def numbers(self, inputs: dict[str, Any]) -> Any:
        """The numeric columns, stacked and normalised with the training statistics (None if there are none)."""
        import keras

        numeric = [f for f in self.kind.fields if isinstance(f, NumberField)]
        if not numeric:
            return None
        columns = [keras.layers.Reshape((1,))(inputs[f.column]) for f in numeric]
        stacked = keras.layers.Concatenate(name="numeric")(columns) if len(columns) > 1 else columns[0]
        mean, variance = [f.mean for f in numeric], [f.std**2 for f in numeric]
        return keras.layers.Normalization(mean=mean, variance=variance, name="normalize")(stacked)

    def categories(self, inputs: dict[str, Any]) -> list[Any]:
        """Each categorical column one-hot over its training vocabulary (unseen values share one slot)."""
        import keras

        return [
            keras.layers.StringLookup(
                vocabulary=f.vocabulary or [""], output_mode="one_hot", name=f"lookup_{safe_name(f.column)}"
            )(inputs[f.column])
            for f in self.kind.fields
            if not isinstance(f, NumberField)
        ]


@kit.hookimpl
def register_backbones(register: Any) -> None:
    register(MLP)
