"""Settings sections (``section``) and flag value types (``types``): the bottom of the
configuration, importable by methods and metrics that declare settings of their own."""
from pipeline.settings.section import ALWAYS, NEVER, UNLESS_DEFAULT, Settings, route, setting
from pipeline.settings.types import non_negative_int, positive_float, positive_int

__all__ = ["ALWAYS", "NEVER", "UNLESS_DEFAULT", "Settings", "non_negative_int", "positive_float", "positive_int",
           "route", "setting"]
