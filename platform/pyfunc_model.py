"""A registered pair as an MLflow pyfunc model: what `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` gives.

The version's files are an MLflow model (`MLmodel`, signature, input example) whose artifact `pair` is the
saved pair's folder, so MLflow users load it by alias and call `predict`, `mlflow models serve
--env-manager local` serves it, and the predictor and KServe's storage initializer read the same folder
(`model_store.pair_folder`). `predict` takes rows of `prompt` (text) and `image` (an optional base64 PNG or
JPEG, the user's picture) and answers each with its `text` and its drawn `images` (base64 PNGs), in order.
"""

from __future__ import annotations

import base64
import io
import json

import mlflow.pyfunc

INPUT_EXAMPLE = {"prompt": ["How do I move the red circle to the right?"], "image": [""]}
PARAMS = {"seed": 0, "max_new_tokens": 128, "max_images": 4}
EXAMPLE_PARAMS = {"seed": 0, "max_new_tokens": 24, "max_images": 1}  # MLflow runs the example at logging


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "prompt"), ColSpec("string", "image", required=False)])
    outputs = Schema([ColSpec("string", "text"), ColSpec("string", "images")])  # images: a JSON list
    params = ParamSchema([ParamSpec(k, "long", v) for k, v in PARAMS.items()])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


class PairModel(mlflow.pyfunc.PythonModel):
    """The pair behind MLflow's pyfunc interface (CPU, float32: MLflow serving has no device flags)."""

    def load_context(self, context) -> None:
        from duogen.model.pair import DuoGenPair

        self.pair = DuoGenPair.from_pretrained(context.artifacts["pair"], device="cpu")

    def predict(self, context, model_input, params=None):
        import pandas as pd
        from PIL import Image

        from duogen.model.generate import GenerationOptions, generate_answer
        from duogen.model.images import png_base64

        settings = {**PARAMS, **(params or {})}
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        out = []
        for row in rows:
            content = [{"type": "text", "text": str(row["prompt"])}]
            if row.get("image"):
                picture = Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB")
                content.append({"type": "image", "image": picture})
            options = GenerationOptions(
                seed=int(settings["seed"]),
                max_new_tokens=int(settings["max_new_tokens"]),
                max_images=int(settings["max_images"]),
            )
            answer = generate_answer(self.pair, [{"role": "user", "content": content}], options)
            out.append({"text": answer.text, "images": json.dumps([png_base64(i) for i in answer.images])})
        return pd.DataFrame(out, columns=["text", "images"])
