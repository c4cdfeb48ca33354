"""keras_effconv: efficient convolutions as exact multi-backend Keras 3 layers.

The public names (`applications`, `datasets`, `decompose`, `export`,
`layers`, `profiling`, `convert`, `profile`) are imported on first use
(PEP 562, as in scipy), so `import keras_effconv` (and the `keras-effconv`
command line's `--help`) imports neither Keras nor a backend (TensorFlow,
JAX, torch).

Saved models: the package's layers and models are registered with Keras
(`keras.saving.register_keras_serializable`) as soon as both this package and
Keras are imported, in either order, so

    import keras_effconv
    import keras
    model = keras.saving.load_model("model.keras")

loads a file saved with them, as it did when everything was imported
eagerly. The registration imports `keras_effconv.layers`,
`keras_effconv.applications` and `keras_effconv.export` (about 0.1 s once
Keras is loaded) at the end of the import that first brings Keras and this
package together: `import keras` after `import keras_effconv`, the first
import of a `keras_effconv` module that needs Keras, or `import
keras_effconv` when Keras is already imported.
"""

import importlib
import importlib.abc
import sys
import threading
import warnings

from keras_effconv.version import __version__

_SUBMODULES = ("applications", "datasets", "decompose", "export", "layers", "profiling")
# name -> the submodule that defines it
_FUNCTIONS = {"convert": "applications", "profile": "profiling"}
# Importing these registers every class of the package that a .keras file can name.
_SERIALIZABLE_MODULES = ("keras_effconv.layers", "keras_effconv.applications", "keras_effconv.export")

__all__ = ["__version__", *_SUBMODULES, *_FUNCTIONS]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FUNCTIONS:
        value = getattr(importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Imports the serializable modules once Keras is imported, without importing Keras itself.

    A post-import hook: it finds nothing itself; for `keras` and this
    package's modules it takes the spec the other finders return and wraps
    its loader's `exec_module`. When the outermost of these imports in a
    thread has run (so no module of this package is half-initialised) and
    Keras is in `sys.modules`, `register()` imports `_SERIALIZABLE_MODULES`.
    """

    def __init__(self):
        self._local = threading.local()
        self.registered = False

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras" and not fullname.startswith(f"{__name__}."):
            return None
        if getattr(self._local, "finding", False):
            return None
        self._local.finding = True
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is not self and hasattr(finder, "find_spec"):
                    spec = finder.find_spec(fullname, path, target)
                    if spec is not None:
                        break
        finally:
            self._local.finding = False
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None or isinstance(loader, type) or self.registered:
            return spec
        exec_module = getattr(exec_module, "__wrapped__", exec_module)  # a loader shared by modules

        def exec_and_register(module):
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + 1
            try:
                exec_module(module)
            finally:
                self._local.depth = depth
            if depth == 0:
                self.register()

        exec_and_register.__wrapped__ = exec_module
        try:
            loader.exec_module = exec_and_register
        except (AttributeError, TypeError):  # a loader without an instance dict: no hook
            pass
        return spec

    def register(self):
        """Imports the serializable modules if Keras is imported; never raises."""
        if self.registered or "keras" not in sys.modules:
            return
        self.registered = True
        try:
            for name in _SERIALIZABLE_MODULES:
                importlib.import_module(name)
        except Exception as error:  # an `import keras` must not fail because of this package
            self.registered = False
            warnings.warn(
                f"keras_effconv could not register its layers with Keras ({type(error).__name__}: {error}); "
                "import keras_effconv.layers to see the error",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            if self in sys.meta_path:
                sys.meta_path.remove(self)


_registration = _RegisterWithKeras()
sys.meta_path.insert(0, _registration)
_registration.register()
