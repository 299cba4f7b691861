"""Accuracy and macro-F1 as an evaluate module, so the plugin scores offline like the built-ins."""

import datasets
import evaluate
import numpy as np


class AccuracyF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy and macro-averaged F1 over integer class labels.",
            citation="",
            inputs_description="predictions: list of int; references: list of int",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        f1s = []
        for label in np.union1d(predictions, references):
            tp = np.sum((predictions == label) & (references == label))
            fp = np.sum((predictions == label) & (references != label))
            fn = np.sum((predictions != label) & (references == label))
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        return {"accuracy": float(np.mean(predictions == references)), "f1": float(np.mean(f1s))}
