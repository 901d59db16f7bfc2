"""Installing needs Python 3.7 or newer (pyproject.toml says the rest).

pip 18.1, the pip of Python 3.6, builds with setup.py: this says why it
stops there, instead of a failure to find a setuptools for 3.6.
"""

import sys

if sys.version_info < (3, 7):
    sys.exit("Broadcast Chat installs on Python 3.7 or newer (this is Python %d.%d). "
             "On 3.6 nothing needs installing: run python3 server.py and python3 client.py "
             "from the checkout." % sys.version_info[:2])

from setuptools import setup    # noqa: E402

setup()
