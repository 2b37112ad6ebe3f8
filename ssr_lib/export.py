"""Exporting a model to TensorFlow Lite and ONNX, and running the exported files.

Phones and browsers run neither Keras nor Python. TensorFlow Lite (`.tflite`)
and ONNX (`.onnx`) are the two common files for them. Each export here comes
with a function that runs the file, so that its ages can be checked against
the Keras model's on the same faces.

- `to_tflite(model, path)`: float32 weights and arithmetic.
- `to_tflite(model, path, quantize="weights")`: int8 weights, activations
  kept in float32 between operations (dynamic-range quantisation). For
  SSR-Net the file is about half the float32 one: the weights shrink four
  times, the graph around them does not.
- `to_tflite(model, path, quantize="full", calibration=faces)`: int8
  weights and activations, with the range of every activation measured on
  `faces` (post-training quantisation). Input and output stay float32.
- `to_onnx(model, path)`: float32, through `tf2onnx`.

Introduced in notebook 11, *Benchmarks*.
"""

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

ONNX_OPSET = 17


def _input_spec(model):
    return tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image")


def to_tflite(model, path, quantize=None, calibration=None):
    """Write `model` as a TensorFlow Lite file and return its path.

    Args:
        model: a Keras model from float32 images to ages.
        path: the `.tflite` file to write.
        quantize: `None` for float32, `"weights"` for int8 weights, or
            `"full"` for int8 weights and activations. Defaults to `None`.
        calibration: float32 faces `(n, h, w, 3)`, values 0..255, whose
            activations set the int8 ranges; needed for `"full"` (a few
            hundred are enough).
    """
    if quantize not in (None, "weights", "full"):
        raise ValueError(f"Expected quantize None, 'weights' or 'full'. Received: {quantize!r}")
    if quantize == "full" and calibration is None:
        raise ValueError("Full int8 quantisation needs calibration faces: pass calibration=faces.")
    path = Path(path)
    # Converting a SavedModel freezes the weights into constants, which
    # int8 calibration needs; a converted `tf.function` keeps them as variables.
    with tempfile.TemporaryDirectory() as saved_model:
        model.export(saved_model, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if quantize == "full":
            flatbuffer = _quantize_int8(converter, calibration)
        else:
            if quantize == "weights":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flatbuffer = converter.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path


def _quantize_int8(converter, calibration):
    """Convert with int8 weights and activations, keeping divisions in float32.

    SSR-Net divides by the product of each stage's scaled width. Quantised to
    int8, that product can round to zero and the division fails when the
    model runs, so DIV operations stay float32: the debugger's deny list
    keeps them out of quantisation.

    NOTE: the ages still move: on 200 UTKFace faces the released SSR-Net's
    int8 ages differed from Keras' by about 1.2 years on average and up to
    3.6 years. Keeping MUL, ADD, SUM, SUB and MAXIMUM in float32 too, or
    calibrating on 1,000 faces, did not reduce that.
    """
    faces = np.asarray(calibration, np.float32)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([face[None]] for face in faces)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=lambda: ([face[None]] for face in faces[:8]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=["DIV"]),
    )
    return debugger.get_nondebug_quantized_model()


class TFLiteModel:
    """Run a `.tflite` file one face at a time, as a phone would."""

    def __init__(self, path, use_xnnpack=True):
        """Load `path`. XNNPACK, the fast CPU kernels, cannot prepare every
        int8 graph; `use_xnnpack=False` runs TensorFlow Lite's own kernels."""
        resolver = tf.lite.experimental.OpResolverType
        self.interpreter = tf.lite.Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=resolver.AUTO if use_xnnpack
            else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]

    def predict_one(self, face):
        """Return the age of one float32 face `(h, w, 3)`."""
        self.interpreter.set_tensor(self.input, np.asarray(face, np.float32)[None])
        self.interpreter.invoke()
        return float(self.interpreter.get_tensor(self.output)[0, 0])

    def predict(self, faces):
        """Return the ages of float32 faces `(n, h, w, 3)` as an array `(n,)`."""
        return np.array([self.predict_one(face) for face in faces])


def to_onnx(model, path):
    """Write `model` as an ONNX file (opset 17) and return its path."""
    import tf2onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tf2onnx.convert.from_keras(model, input_signature=(_input_spec(model),), opset=ONNX_OPSET,
                               output_path=str(path))
    return path


class ONNXModel:
    """Run an `.onnx` file with ONNX Runtime on the CPU."""

    def __init__(self, path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, faces):
        """Return the ages of float32 faces `(n, h, w, 3)` as an array `(n,)`."""
        (ages,) = self.session.run(None, {self.input: np.asarray(faces, np.float32)})
        return ages[:, 0]
