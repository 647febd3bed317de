"""KFP v2 lightweight Python components, one per module, each a thin shell over ``ptdistill.steps``."""
