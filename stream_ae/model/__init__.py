"""The model: what is trained offline and served, and the one way events are scored.

* ``detector``: the detector contract (``Detector``, ``Scores``, ``build_detector``): a
  checkpoint's scorer of events, which every user of a score goes through;
* ``autoencoders``: the autoencoder family (simple, sparse, deep, denoising, variational,
  1-D convolutional) behind one interface, built by name from ``MODEL_BUILDERS``;
* ``kinds``: the event kinds (``transaction``, ``window``) that models, datasets,
  checkpoints and the settings share;
* ``checkpoint``: one file with the architecture (model name and hyper-parameters), the
  weights, the scaler, the input layout, the validation scores and the provenance, loaded
  without running pickled code;
* ``training``: fitting a model on normal rows only, with a fitted standardisation (per
  feature; one scale per window) and early stopping on held-out normal rows, into a
  checkpoint;
* ``datasets``: the labelled datasets (card transactions, ECG windows, ADBench ``.npz``,
  any CSV or parquet, synthetic data) and the seeded split that keeps anomalies out of
  training;
* ``device``: choosing the torch device (``auto``, ``cpu``, ``cuda[:N]``).

Nothing is imported here, so that serving a checkpoint does not load pandas: import the
sub-module you need.
"""
