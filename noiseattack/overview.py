"""The overview moved to `noiseattack.report.overview`; `noiseattack.overview` is that module, as before."""

import sys

from .report import overview

sys.modules[__name__] = overview
