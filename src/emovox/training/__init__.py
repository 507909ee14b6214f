"""Training one model on one fold (trainer) and running whole protocols (runner)."""
