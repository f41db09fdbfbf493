"""The exceptions a command turns into a one-line message and an exit code (`cyclejax.cli`).

Library functions raise them where the bad input enters, with a message that names the file,
folder, option or config key and says what to do.
"""


class UserError(ValueError):
    """Input the user can fix (exit code 2)."""


class ConversionError(UserError):
    """A weight file that is not the state dict it should be (exit code 2)."""


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf; the message names the step and its losses (exit code 3)."""
