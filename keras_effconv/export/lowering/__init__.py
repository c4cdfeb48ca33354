"""Export lowering rules, one module per conv method (plus Keras' own layers).

Importing this package registers every built-in rule with
`keras_effconv.export.rules`; `optimize_for_inference` imports it. A new
method adds one module here with `@lowering_rule(ItsLayer)` and one import
line below (or registers its rule from its own package).
"""

from keras_effconv.export.lowering import channels  # noqa: F401
from keras_effconv.export.lowering import compconv  # noqa: F401
from keras_effconv.export.lowering import factorized  # noqa: F401
from keras_effconv.export.lowering import hetconv  # noqa: F401
from keras_effconv.export.lowering import igc  # noqa: F401
from keras_effconv.export.lowering import keras_layers  # noqa: F401
