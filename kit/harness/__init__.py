"""The training harness: strategy, optimizer, callbacks, run directories, and the run itself."""
