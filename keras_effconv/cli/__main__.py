"""`python -m keras_effconv.cli ...`, the same as `keras-effconv ...`."""

import sys

from keras_effconv.cli import main

if __name__ == "__main__":
    sys.exit(main())
