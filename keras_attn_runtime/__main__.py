"""`python -m keras_attn_runtime`: the device command line."""

import sys

from keras_attn_runtime.cli import main

sys.exit(main())
