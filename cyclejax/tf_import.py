"""TensorFlow as cyclejax uses it (tf.data, tf.summary, tf.io.gfile): imported without Keras, and
with accelerators hidden from it.

`import tensorflow` imports Keras 3 eagerly (to register Keras' optimizers with SavedModel,
tensorflow/__init__.py), and Keras imports pandas and matplotlib: 1.1-1.7 s of a 2.9-3.6 s
import on the 2-core VM, in every train command (and whatever else reads datasets or writes
TensorBoard summaries), for nothing cyclejax calls. With "keras" marked missing while
TensorFlow loads, TensorFlow skips that import (it catches the ImportError); `tf.keras` stays
lazy and `import keras` works afterwards. Where Keras or TensorFlow was imported first, this
changes nothing.
"""
import sys


def _import_tensorflow():
    block = "keras" not in sys.modules and "tensorflow" not in sys.modules
    if block:
        sys.modules["keras"] = None  # an import of keras raises ImportError
    try:
        import tensorflow
    finally:
        if block and sys.modules.get("keras", 0) is None:
            del sys.modules["keras"]
    tensorflow.config.set_visible_devices([], "GPU")  # tf.data only: leave accelerators to JAX
    return tensorflow


tf = _import_tensorflow()
