"""Scoring: the contract (``base``: a batch in, scores and attributions out) and the
autoencoder's reconstruction-error head (``autoencoder``)."""
