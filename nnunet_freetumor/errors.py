"""The one exception of the package (imported by everything, importing nothing)."""


class FreeTumorConfigError(ValueError):
    """A configuration or dataset problem the user must fix; the message says what and how."""
