"""KFP v2 lightweight Python components, one per module, each a thin shell over ``ptdistill.steps``."""

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it
