"""Tools on top of the engine (accuracy comparison, CLI); the engine never imports them."""
