"""Lightning callbacks, one concern each: history, best weights, clean interrupts.

Each is written once and made on the Lightning package of the run's Trainer when a fit needs it,
``Recorder.on(package)(...)`` (see nbopt.lightning_package).
"""
