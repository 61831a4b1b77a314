"""User-facing errors.

Every error that bad *input* can cause (a missing file, a mismatched dimension, an unknown
architecture, a token the model does not have, NaNs...) is raised as a :class:`WorkbenchError`
with a one-line message of the form ``"<what> must be <constraint>; got <value>. <hint>"``.
The CLI prints exactly that line and exits with status 2; anything else is a bug and keeps its
traceback.
"""


class WorkbenchError(ValueError):
    """Bad input that the user can fix. The message is one line and says how."""

    fields: tuple[str, ...] = ()
    """Config fields (Python names, e.g. ``max_feature_nodes``) the message offers as remedies; a
    front end may name its own spelling of them (the CLI adds its flags)."""


class ArchitectureError(WorkbenchError):
    """A model architecture, or a config feature of it, that tracer cannot honour exactly."""


class TranscoderFormatError(WorkbenchError):
    """A transcoder file set that is missing, corrupt or does not match the model."""


class StaleRunError(WorkbenchError):
    """An output folder that holds an activation run of other prompts, model or settings."""


class MemoryLimitError(WorkbenchError):
    """A computation that would need more memory than the machine has available."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields
