"""Lightning callbacks, one concern each: history, best weights, clean interrupts."""
