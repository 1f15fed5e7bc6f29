"""The anonymize/augment jobs' methods as registered plug-ins (see ``registry``). Importing the
package registers the built-in ones: Boomerang and cold local sampling per degradation.

Adding a method: subclass ``Method`` in a new module here (or anywhere), ``register`` an
instance, and import the module below; ``--method <name>`` then works in every job."""
from pipeline.methods import boomerang, cold
from pipeline.methods.registry import Method, MethodResult, get_method, method_names, register

__all__ = ["Method", "MethodResult", "boomerang", "cold", "get_method", "method_names",
           "register"]
