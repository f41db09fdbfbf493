"""cyclejax: CycleGAN (Zhu, Park, Isola, Efros, ICCV 2017) in JAX and Flax."""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# Quiet by default. TensorFlow is here for tf.data only; at import it logs that its oneDNN
# layer ops are on (twice) and which CPU instructions it was built for. Those ops are never
# run by tf.data (the input batches are bitwise the same either way), so turning them off
# also silences the lines; its C++ INFO and WARNING lines (such as a tf.data worker's report of
# an unreadable file, which cyclejax reports in one line itself) are hidden too. `--verbosity=0`
# (or higher) on any command, or setting the variables yourself, keeps TensorFlow's defaults.
if not any(a.startswith(("--verbosity", "-v")) for a in _sys.argv[1:]):
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
