"""Report building: one function per figure, each testable on a pandas frame of trials."""
