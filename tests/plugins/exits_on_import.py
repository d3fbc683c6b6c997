"""A plugin that calls sys.exit while being imported, as a script that parses its arguments at import time does."""

import sys

sys.exit("exits_on_import: usage: exits_on_import.py INPUT")
