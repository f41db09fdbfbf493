"""What a compiled program's oneDNN custom calls compute, read from its HLO text."""
import re

_CALL = re.compile(r"f32\[(\d+),\d+,\d+,\d+\][^ ]* custom-call\([^\n]*"
                   r"custom_call_target=\"cyclejax_onednn_conv_(?:forward|backward_data)\"")


def onednn_call_rows(compiled) -> list[int]:
    """The batch rows of the activations each oneDNN forward and backward-data call of a
    compiled program computes (its result's leading dimension); [] without such calls."""
    return sorted({int(m) for m in _CALL.findall(compiled.as_text())})
