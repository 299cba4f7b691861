"""The one error type of the QA task logic, so callers can catch bad QA input specifically."""


class QADataError(ValueError):
    """Bad QA data or settings; the message names the problem and the fix."""
